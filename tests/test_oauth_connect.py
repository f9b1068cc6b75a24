"""Connecting QuickBooks and Xero with the OAuth 2.0 authorization-code flow + PKCE, against the sandboxes.

Through the command (``connections connect`` → the sandbox's consent redirect → ``connections
complete``) and through the API (``POST /v1/stored-connections/connect`` → the redirect →
``GET /oauth/callback``): the connection is stored with its client credentials and tokens
encrypted (raw rows read), the connector's first call and a refresh with the rotated token work;
a wrong code verifier, a replayed state, an expired state and a refused consent are refused and
store nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import yaml
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner

from ledgerflow.app.cli import app as cli
from ledgerflow.app.connections_cli import routing_check
from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.quickbooks.connector import QuickBooksConnector
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.connectors.xero.connector import XeroConnector
from ledgerflow.core.asgi import serve
from ledgerflow.core.connections import stored_routing
from ledgerflow.core.settings import Settings
from ledgerflow.core.state import StateStore
from tests.audit.api_helpers import AuditApi, audit_api

REDIRECT = "http://127.0.0.1:9/oauth/callback"


@dataclass(frozen=True)
class Erp:
    kind: str
    sandbox: ModuleType
    connector: type[Connector]
    client_id: str
    client_secret: str
    tenant_credential: str
    tenant_value: str


ERPS = {
    "quickbooks": Erp(
        "quickbooks",
        qbo_sandbox,
        QuickBooksConnector,
        qbo_sandbox.DEFAULT_CREDENTIALS.client_id,
        qbo_sandbox.DEFAULT_CREDENTIALS.client_secret,
        "realm_id",
        qbo_sandbox.DEFAULT_CREDENTIALS.realm_id,
    ),
    "xero": Erp(
        "xero",
        xero_sandbox,
        XeroConnector,
        xero_sandbox.DEFAULT_CREDENTIALS.client_id,
        xero_sandbox.DEFAULT_CREDENTIALS.client_secret,
        "tenant_id",
        xero_sandbox.DEFAULT_CREDENTIALS.tenant_id,
    ),
}


def _routing(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "acme": {"sources": {"mercoa": {"tokens": ["t"]}}, "connections": ["yaml-qbo"]},
                    "beta": {"sources": {"mercoa": {"tokens": ["u"]}}},
                },
                "connections": {"yaml-qbo": {"erp": "quickbooks", "objects": ["bill"]}},
            }
        ),
        encoding="utf-8",
    )
    return path


def _settings(tmp_path: Path, key: str) -> Settings:
    return Settings(
        routing_file=_routing(tmp_path),
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
        connections_key=SecretStr(key),
        oauth_allow_custom_root=True,  # the sandboxes serve the vendors' OAuth paths
    )


def _consent(url: str) -> dict[str, str]:
    """Open the consent URL (the sandbox approves at once) and return the callback's query."""
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _raw_rows(db: Path, name: str) -> tuple[str, str, str | None]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (credentials,) = conn.execute("SELECT credentials FROM erp_connections WHERE name = ?", (name,)).fetchone()
        access, refresh = conn.execute(
            "SELECT access_token, refresh_token FROM oauth_tokens WHERE connection = ?", (name,)
        ).fetchone()
    return credentials, access, refresh


def _assert_encrypted(db: Path, name: str, erp: Erp) -> None:
    credentials, access, refresh = _raw_rows(db, name)
    assert erp.client_secret not in credentials
    assert erp.client_id not in credentials
    assert access.startswith("fernet:")
    assert refresh is not None
    assert refresh.startswith("fernet:")
    assert "rt-" not in refresh
    assert "at-" not in access


async def _book_and_refresh(settings: Settings, name: str, erp: Erp, app: FastAPI) -> None:
    """The connector's first call uses the stored token; after a revocation it refreshes with the rotated one."""
    routing = await stored_routing(settings, settings.load_routing(), decrypt=[name])
    config = routing.connections[name]
    assert config.credentials[erp.tenant_credential].get_secret_value() == erp.tenant_value
    issuer = app.state.sandbox.issuer
    state = StateStore.from_settings(settings)
    try:
        async with httpx.AsyncClient() as http:
            connector = erp.connector(name, config, http, state)
            await connector.check()
            assert issuer.refreshes == 0  # the access token of the code exchange
            before = await state.get_token(name)
            issuer.revoke_access_tokens()
            await connector.check()
            assert issuer.refreshes == 1
            after = await state.get_token(name)
            assert before is not None
            assert after is not None
            assert after.refresh_token != before.refresh_token  # rotated and persisted
    finally:
        await state.close()


@contextlib.contextmanager
def _sandbox_thread(app: FastAPI) -> Iterator[str]:
    """``app`` served on loopback by a thread of its own (the command runs its own event loop)."""
    started: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        async def main() -> None:
            async with serve(app, host="127.0.0.1", port=0) as url:
                started.put(url)
                await asyncio.to_thread(stop.wait)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield started.get(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.mark.parametrize("kind", ["quickbooks", "xero"])
def test_cli_connect_and_complete(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    erp = ERPS[kind]
    key = Fernet.generate_key().decode()
    settings = _settings(tmp_path, key)
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", settings.state_url)
    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", key)
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(settings.routing_file))
    monkeypatch.setenv("LEDGERFLOW_OAUTH_CLIENT_SECRET", erp.client_secret)
    monkeypatch.setenv("LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT", "true")
    runner = CliRunner()
    sandbox_app = erp.sandbox.create_app()
    name = f"{kind}-acme"
    with _sandbox_thread(sandbox_app) as url:
        args = ["connections", "connect", kind, "--tenant", "acme", "--name", name, "--redirect-uri", REDIRECT]
        args += ["--client-id", erp.client_id, "--base-url", url, "--oauth-root", url]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        consent_url = next(line for line in result.stdout.splitlines() if line.startswith("http"))
        assert erp.client_secret not in result.output
        query = parse_qs(urlsplit(consent_url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["response_type"] == ["code"]
        assert query["redirect_uri"] == [REDIRECT]

        callback = _consent(consent_url)
        assert set(callback) >= {"code", "state"}
        if kind == "quickbooks":
            assert callback["realmId"] == erp.tenant_value
        callback_url = REDIRECT + "?" + "&".join(f"{k}={v}" for k, v in callback.items())
        result = runner.invoke(cli, ["connections", "complete", "--url", callback_url])
        assert result.exit_code == 0, result.output
        assert f"connection {name!r} connected ({kind}, tenant(s) acme)" in result.output

        # Replayed: the state was single-use.
        result = runner.invoke(cli, ["connections", "complete", "--url", callback_url])
        assert result.exit_code == 2
        assert "unknown or already used state" in result.output

        shown = orjson.loads(runner.invoke(cli, ["connections", "show", name]).stdout)
        assert sorted(shown["credentials"]) == sorted(
            ["client_id", "client_secret", "refresh_token", erp.tenant_credential, "token_url"]
        )
        _assert_encrypted(tmp_path / "state.db", name, erp)
        asyncio.run(_book_and_refresh(settings, name, erp, sandbox_app))


@contextlib.asynccontextmanager
async def _api_and_sandbox(tmp_path: Path, kind: str) -> AsyncIterator[tuple[AuditApi, str, FastAPI, Settings]]:
    settings = _settings(tmp_path, Fernet.generate_key().decode())
    sandbox_app = ERPS[kind].sandbox.create_app()
    async with (
        audit_api(tmp_path, url=settings.state_url, settings=settings, connection_check=routing_check(settings)) as api,
        serve(sandbox_app, host="127.0.0.1", port=0) as url,
    ):
        yield api, url, sandbox_app, settings


async def _start(client: httpx.AsyncClient, kind: str, name: str, url: str, **extra: Any) -> httpx.Response:
    erp = ERPS[kind]
    body = {
        "erp": kind,
        "name": name,
        "tenants": ["acme"],
        "client_id": erp.client_id,
        "client_secret": erp.client_secret,
        "redirect_uri": REDIRECT,
        "base_url": url,
        "oauth_root": url,
        **extra,
    }
    return await client.post("/v1/stored-connections/connect", json=body)


async def _follow(client: httpx.AsyncClient, consent_url: str) -> dict[str, str]:
    answer = await client.get(consent_url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}


@pytest.mark.parametrize("kind", ["quickbooks", "xero"])
async def test_api_connect_callback_and_refusals(kind: str, tmp_path: Path) -> None:
    erp = ERPS[kind]
    async with _api_and_sandbox(tmp_path, kind) as (api, url, sandbox_app, settings):
        admin = await api.key(["admin"], ["acme"])
        reader = await api.key(["read"], ["*"])
        async with api.client(admin) as client, api.client() as public, httpx.AsyncClient() as browser:
            # Only admins start consents, for tenants they see.
            async with api.client(reader) as as_reader:
                assert (await _start(as_reader, kind, "x", url)).status_code == 403
            refused = await _start(client, kind, "x", url, tenants=["beta"])
            assert refused.status_code == 404
            assert refused.headers["content-type"] == "application/problem+json"

            started = await _start(client, kind, f"{kind}-acme", url)
            assert started.status_code == 201, started.text
            assert erp.client_secret not in started.text
            callback = await _follow(browser, started.json()["url"])
            done = await public.get("/oauth/callback", params=callback)
            assert done.status_code == 200, done.text
            connection = done.json()["connection"]
            assert connection["name"] == f"{kind}-acme"
            assert connection["tenants"] == ["acme"]
            assert erp.tenant_credential in connection["credentials"]
            assert erp.client_secret not in done.text
            _assert_encrypted(tmp_path / "state.db", f"{kind}-acme", erp)
            await _book_and_refresh(settings, f"{kind}-acme", erp, sandbox_app)

            # A replayed state finds nothing.
            replay = await public.get("/oauth/callback", params=callback)
            assert replay.status_code == 400
            assert replay.json()["type"].endswith("invalid-state")

            # The same name again: 409 at once.
            assert (await _start(client, kind, f"{kind}-acme", url)).status_code == 409

            # A wrong code verifier: the sandbox refuses the code, nothing is stored.
            started = await _start(client, kind, "wrong-verifier", url)
            callback = await _follow(browser, started.json()["url"])
            await _tamper_verifier(api, settings, callback["state"])
            wrong = await public.get("/oauth/callback", params=callback)
            assert wrong.status_code == 400, wrong.text
            assert wrong.json()["type"].endswith("token-exchange-refused")
            assert "invalid_grant" in wrong.json()["detail"]
            assert (await client.get("/v1/stored-connections/wrong-verifier")).status_code == 404

            # An expired state.
            started = await _start(client, kind, "too-late", url)
            callback = await _follow(browser, started.json()["url"])
            async with api.store.engine.begin() as conn:
                await conn.execute(text("UPDATE oauth_authorizations SET expires_at = '2000-01-01 00:00:00'"))
            late = await public.get("/oauth/callback", params=callback)
            assert late.status_code == 400
            assert late.json()["type"].endswith("expired-state")
            assert "expired" in late.json()["detail"]

            # A refused consent.
            started = await _start(client, kind, "refused", url)
            state = parse_qs(urlsplit(started.json()["url"]).query)["state"][0]
            denied = await public.get("/oauth/callback", params={"state": state, "error": "access_denied"})
            assert denied.status_code == 400
            assert denied.json()["type"].endswith("consent-refused")

            listed = (await client.get("/v1/stored-connections")).json()
            assert [c["name"] for c in listed] == [f"{kind}-acme"]


async def _tamper_verifier(api: AuditApi, settings: Settings, state: str) -> None:
    """Replace the pending authorization's code verifier by another valid one (an attacker's guess)."""
    import hashlib

    from ledgerflow.core.cipher import ConnectionCipher

    cipher = ConnectionCipher.from_settings(settings)
    digest = hashlib.sha256(state.encode()).hexdigest()
    async with api.store.engine.begin() as conn:
        name, sealed = (
            await conn.execute(
                text("SELECT connection, secrets FROM oauth_authorizations WHERE state_hash = :h"), {"h": digest}
            )
        ).one()
        secrets = orjson.loads(cipher.unseal(name, sealed))
        secrets["code_verifier"] = "x" * 64
        await conn.execute(
            text("UPDATE oauth_authorizations SET secrets = :s WHERE state_hash = :h"),
            {"s": cipher.seal(name, orjson.dumps(secrets).decode()), "h": digest},
        )


async def test_the_sandbox_authorize_and_token_endpoints_are_strict() -> None:
    app = qbo_sandbox.create_app()
    creds = qbo_sandbox.DEFAULT_CREDENTIALS
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    verifier = "v" * 50
    good = {
        "client_id": creds.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": qbo_sandbox.SCOPE,
        "state": "s1",
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qbo") as client:

        async def authorize(**change: str) -> httpx.Response:
            return await client.get(qbo_sandbox.AUTHORIZE_PATH, params={**good, **change})

        assert (await authorize(client_id="nobody")).status_code == 400
        assert (await authorize(redirect_uri="https://evil.example/cb")).status_code == 400
        for change, error in [
            ({"response_type": "token"}, "unsupported_response_type"),
            ({"scope": "accounting"}, "invalid_scope"),
            ({"code_challenge_method": "plain"}, "invalid_request"),
            ({"code_challenge": ""}, "invalid_request"),
        ]:
            answer = await authorize(**change)
            assert answer.status_code == 302
            assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == [error]
        code = parse_qs(urlsplit((await authorize()).headers["location"]).query)["code"][0]

        async def exchange(basic: bool = True, **change: str) -> httpx.Response:
            form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
            form |= {"code_verifier": verifier, **change}
            if not basic:
                form |= {"client_id": creds.client_id, "client_secret": creds.client_secret}
                return await client.post(qbo_sandbox.TOKEN_PATH, data=form)
            return await client.post(qbo_sandbox.TOKEN_PATH, data=form, auth=(creds.client_id, creds.client_secret))

        assert (await exchange(basic=False)).status_code == 401  # Intuit: HTTP Basic only
        assert (await exchange(redirect_uri="http://127.0.0.1:9/other")).json()["error"] == "invalid_grant"
        # Each failed exchange spent the code: a fresh one per case.
        code = parse_qs(urlsplit((await authorize()).headers["location"]).query)["code"][0]
        assert (await exchange(code_verifier="w" * 50)).json()["error"] == "invalid_grant"
        code = parse_qs(urlsplit((await authorize()).headers["location"]).query)["code"][0]
        ok = await exchange()
        assert ok.status_code == 200
        assert {"access_token", "refresh_token", "expires_in"} <= set(ok.json())
        assert (await exchange()).json()["error"] == "invalid_grant"  # single use


async def test_api_crud_with_scopes_tenants_and_write_only_credentials(tmp_path: Path) -> None:
    settings = _settings(tmp_path, Fernet.generate_key().decode())
    secret = "very-secret-refresh-token-0042"
    async with audit_api(
        tmp_path, url=settings.state_url, settings=settings, connection_check=routing_check(settings)
    ) as api:
        root = await api.key(["admin"], ["*"])
        acme_admin = await api.key(["admin"], ["acme"])
        beta_reader = await api.key(["read"], ["beta"])
        body = {
            "name": "xero-acme",
            "erp": "xero",
            "tenants": ["acme"],
            "objects": ["bill", "vendor"],
            "credentials": {"client_id": "app", "client_secret": "s", "refresh_token": secret, "tenant_id": "t"},
            "options": {"create_vendors": True},
        }
        async with api.client(acme_admin) as acme, api.client(root) as admin, api.client(beta_reader) as beta:
            async with api.client() as anonymous:
                assert (await anonymous.get("/v1/stored-connections")).status_code == 401
                assert (await anonymous.post("/v1/stored-connections", json=body)).status_code == 401
            assert (await beta.post("/v1/stored-connections", json=body)).status_code == 403

            created = await acme.post("/v1/stored-connections", json=body)
            assert created.status_code == 201, created.text
            assert secret not in created.text
            assert created.json()["credentials"] == ["client_id", "client_secret", "refresh_token", "tenant_id"]
            assert created.json()["enabled"] is True
            assert (await acme.post("/v1/stored-connections", json=body)).status_code == 409
            # The routing file's name, an unknown tenant, a tenant the key does not see, bad options.
            clash = await admin.post("/v1/stored-connections", json={**body, "name": "yaml-qbo"})
            assert clash.status_code == 409
            unknown = await admin.post("/v1/stored-connections", json={**body, "name": "n2", "tenants": ["zeta"]})
            assert unknown.status_code == 400
            assert "'zeta' not in the routing" in unknown.json()["detail"]
            assert (await acme.post("/v1/stored-connections", json={**body, "tenants": ["beta"]})).status_code == 404
            bad = await admin.post("/v1/stored-connections", json={**body, "name": "n3", "options": {"nope": 1}})
            assert bad.status_code == 400
            assert bad.json()["type"].endswith("invalid-connection")
            assert "nope" in bad.json()["detail"]
            assert (await admin.post("/v1/stored-connections", json={**body, "erp": "sap_b1"})).status_code == 400

            shared = await admin.post(
                "/v1/stored-connections", json={**body, "name": "shared", "tenants": ["acme", "beta"]}
            )
            assert shared.status_code == 201
            # A connection is visible to a key that sees every tenant it serves.
            assert [c["name"] for c in (await acme.get("/v1/stored-connections")).json()] == ["xero-acme"]
            assert [c["name"] for c in (await admin.get("/v1/stored-connections")).json()] == ["shared", "xero-acme"]
            assert (await beta.get("/v1/stored-connections")).json() == []
            assert (await acme.get("/v1/stored-connections/shared")).status_code == 404
            assert (await acme.delete("/v1/stored-connections/shared")).status_code == 404
            assert (await beta.get("/v1/stored-connections/xero-acme")).status_code == 404

            patched = await acme.patch(
                "/v1/stored-connections/xero-acme",
                json={"credentials": {"refresh_token": "rotated-by-hand"}, "drop_options": ["create_vendors"]},
            )
            assert patched.status_code == 200, patched.text
            assert patched.json()["options"] == {}
            assert "rotated-by-hand" not in patched.text
            assert (await acme.patch("/v1/stored-connections/xero-acme", json={"tenants": ["beta"]})).status_code == 404
            assert (await beta.patch("/v1/stored-connections/xero-acme", json={})).status_code == 403

            disabled = await acme.post("/v1/stored-connections/xero-acme/disable")
            assert disabled.json()["enabled"] is False
            merged = await stored_routing(settings, settings.load_routing(), decrypt=["shared"])
            assert "xero-acme" not in merged.connections
            assert merged.tenants["beta"].connections == ["shared"]
            assert (await acme.post("/v1/stored-connections/xero-acme/enable")).json()["enabled"] is True
            merged = await stored_routing(settings, settings.load_routing(), decrypt=["xero-acme"])
            stored = merged.connections["xero-acme"].credentials
            assert stored["refresh_token"].get_secret_value() == "rotated-by-hand"

            assert (await acme.delete("/v1/stored-connections/xero-acme")).status_code == 204
            assert (await acme.get("/v1/stored-connections/xero-acme")).status_code == 404
            assert (await acme.delete("/v1/stored-connections/xero-acme")).status_code == 404
            missing = await admin.patch("/v1/stored-connections/none", json={})
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"


@pytest.mark.postgres
async def test_connect_on_postgres_one_of_two_concurrent_callbacks_wins(tmp_path: Path) -> None:
    from ledgerflow.core.connections import ConnectionAdmin, ConnectionStore
    from ledgerflow.core.oauth_connect import ConsentError, OAuthConnect
    from tests.databases import fresh_database

    erp = ERPS["xero"]
    sandbox_app = erp.sandbox.create_app()
    async with fresh_database("ledgerflow_oauth") as db, serve(sandbox_app, host="127.0.0.1", port=0) as url:
        settings = _settings(tmp_path, Fernet.generate_key().decode()).model_copy(update={"state_url": db})
        state = StateStore.from_settings(settings)
        try:
            await state.create_all()
            assert state.cipher is not None
            flow = OAuthConnect(
                ConnectionAdmin(ConnectionStore(state, state.cipher), routing_check(settings)), allow_custom_root=True
            )
            consent = await flow.start(
                "xero",
                name="xero-pg",
                tenants=["acme"],
                client_id=erp.client_id,
                client_secret=erp.client_secret,
                redirect_uri=REDIRECT,
                base_url=url,
                oauth_root=url,
            )
            async with httpx.AsyncClient() as browser:
                callback = await _follow(browser, consent.url)
            results = await asyncio.gather(
                flow.complete(state=callback["state"], code=callback["code"]),
                flow.complete(state=callback["state"], code=callback["code"]),
                return_exceptions=True,
            )
            assert sum(isinstance(r, dict) for r in results) == 1
            refused = [r for r in results if isinstance(r, ConsentError)]
            assert len(refused) == 1
            assert refused[0].kind == "invalid-state"
            async with state.engine.connect() as conn:
                raw = (await conn.execute(text("SELECT credentials FROM erp_connections"))).scalar_one()
                pending = (await conn.execute(text("SELECT count(*) FROM oauth_authorizations"))).scalar_one()
            assert erp.client_secret not in raw
            assert pending == 0
            merged = await stored_routing(settings, settings.load_routing(), decrypt=["xero-pg"])
            assert merged.connections["xero-pg"].credentials["tenant_id"].get_secret_value() == erp.tenant_value
        finally:
            await state.close()


async def test_an_unusable_key_file_answers_503_and_no_key_refuses_credentials(tmp_path: Path) -> None:
    broken = Settings(
        routing_file=_routing(tmp_path),
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
        connections_key_file=tmp_path / "absent",
    )
    async with audit_api(tmp_path, url=broken.state_url, settings=broken) as api:
        key = await api.key(["admin"], ["*"])
        async with api.client(key) as client:
            answer = await client.get("/v1/stored-connections")
            assert answer.status_code == 503
            assert "cannot read LEDGERFLOW_CONNECTIONS_KEY_FILE" in answer.json()["detail"]
    keyless = broken.model_copy(update={"connections_key_file": None})
    async with audit_api(tmp_path, url=keyless.state_url, settings=keyless) as api:
        key = await api.key(["admin"], ["*"])
        async with api.client(key) as client:
            body = {"name": "n", "erp": "xero", "tenants": ["acme"], "credentials": {"client_secret": "s3cr3t-value"}}
            refused = await client.post("/v1/stored-connections", json=body)
            assert refused.status_code == 400
            assert "LEDGERFLOW_CONNECTIONS_KEY" in refused.json()["detail"]
            assert "s3cr3t-value" not in refused.text
            started = await client.post(
                "/v1/stored-connections/connect",
                json={"erp": "xero", "name": "n", "tenants": ["acme"], "client_id": "i", "client_secret": "s"},
            )
            assert started.status_code == 400
            assert "stores client credentials and tokens encrypted" in started.json()["detail"]


async def test_oauth_root_is_refused_unless_allowed_api(tmp_path: Path) -> None:
    """Without LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT an admin cannot send the client secret to another host."""
    settings = _settings(tmp_path, Fernet.generate_key().decode()).model_copy(update={"oauth_allow_custom_root": False})
    async with audit_api(
        tmp_path, url=settings.state_url, settings=settings, connection_check=routing_check(settings)
    ) as api:
        admin = await api.key(["admin"], ["*"])
        async with api.client(admin) as client:
            refused = await _start(client, "xero", "evil", "http://attacker.example:8000")
            assert refused.status_code == 403, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["type"].endswith("/oauth-root-not-allowed")
            assert "LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT" in problem["detail"]
            assert ERPS["xero"].client_secret not in refused.text
            async with api.store.engine.connect() as conn:
                pending = (await conn.execute(text("SELECT count(*) FROM oauth_authorizations"))).scalar_one()
            assert pending == 0
            # Without oauth_root the same admin starts a consent at the vendor's own endpoints.
            body = {"oauth_root": None}
            started = await _start(client, "xero", "real", "http://127.0.0.1:9", **body)
            assert started.status_code == 201, started.text
            assert started.json()["url"].startswith("https://login.xero.com/identity/connect/authorize?")


def test_oauth_root_is_refused_unless_allowed_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, Fernet.generate_key().decode())
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", settings.state_url)
    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", settings.connections_key.get_secret_value())  # type: ignore[union-attr]
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(settings.routing_file))
    monkeypatch.setenv("LEDGERFLOW_OAUTH_CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.delenv("LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT", raising=False)
    args = ["connections", "connect", "quickbooks", "--tenant", "acme", "--name", "q", "--redirect-uri", REDIRECT]
    args += ["--client-id", "i", "--oauth-root", "http://attacker.example:8000"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "oauth_root is refused" in result.output
    assert "LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT=true" in result.output
    assert "s3cr3t-value" not in result.output


async def test_default_redirect_uri_is_the_public_url_when_set(tmp_path: Path) -> None:
    """Behind a proxy the service's own origin is not where a browser can come back: LEDGERFLOW_PUBLIC_URL is."""
    base = _settings(tmp_path, Fernet.generate_key().decode())
    for public_url, expected in [
        ("https://ledgerflow.example.com/api/", "https://ledgerflow.example.com/api/oauth/callback"),
        (None, None),
    ]:
        settings = base.model_copy(update={"public_url": public_url})
        async with audit_api(
            tmp_path, url=settings.state_url, settings=settings, connection_check=routing_check(settings)
        ) as api:
            admin = await api.key(["admin"], ["*"])
            async with api.client(admin) as client:
                name = f"public-{bool(public_url)}"
                started = await _start(client, "xero", name, "http://127.0.0.1:9", redirect_uri=None, oauth_root=None)
                assert started.status_code == 201, started.text
                own = str(client.base_url).rstrip("/") + "/oauth/callback"
                wanted = expected or own
                assert started.json()["redirect_uri"] == wanted
                assert parse_qs(urlsplit(started.json()["url"]).query)["redirect_uri"] == [wanted]
                # An explicit redirect_uri still wins.
                explicit = await _start(client, "xero", name + "-x", "http://127.0.0.1:9", oauth_root=None)
                assert explicit.json()["redirect_uri"] == REDIRECT


def test_public_url_must_be_an_http_origin() -> None:
    from pydantic import ValidationError

    for bad in ("ledgerflow.example.com", "ftp://ledgerflow.example.com", "https://x.example.com/?a=1"):
        with pytest.raises(ValidationError, match="public_url"):
            Settings(public_url=bad)


OTHER_ORG = {"quickbooks": "9130000000000001", "xero": "00000000-0000-4000-8000-000000000001"}


async def _credentials(settings: Settings, name: str) -> dict[str, str]:
    routing = await stored_routing(settings, settings.load_routing(), decrypt=[name])
    return {k: v.get_secret_value() for k, v in routing.connections[name].credentials.items()}


@pytest.mark.parametrize("kind", ["quickbooks", "xero"])
async def test_api_reconnect_replaces_only_credentials_and_refuses_another_organisation(
    kind: str, tmp_path: Path
) -> None:
    erp = ERPS[kind]
    name = f"{kind}-acme"
    async with _api_and_sandbox(tmp_path, kind) as (api, url, sandbox_app, settings):
        admin = await api.key(["admin"], ["acme"])
        async with api.client(admin) as client, api.client() as public, httpx.AsyncClient() as browser:
            started = await _start(client, kind, name, url, objects=["bill", "vendor"])
            assert (
                await public.get("/oauth/callback", params=await _follow(browser, started.json()["url"]))
            ).is_success
            before = (await client.get(f"/v1/stored-connections/{name}")).json()
            old = await _credentials(settings, name)

            # Refused before any consent: unknown name, other tenants, other options.
            unknown = await _start(client, kind, "nope", url, tenants=None, base_url=None, reconnect=True)
            assert unknown.status_code == 404, unknown.text
            other = await _start(client, kind, name, url, tenants=["acme", "beta"], base_url=None, reconnect=True)
            assert other.status_code == 404  # beta is not visible to this key
            moved = await _start(client, kind, name, url, reconnect=True)  # a base_url given
            assert moved.status_code == 400
            assert "reconnect replaces the credentials and tokens" in moved.json()["detail"]

            again = await _start(client, kind, name, url, tenants=None, base_url=None, reconnect=True)
            assert again.status_code == 201, again.text
            done = await public.get("/oauth/callback", params=await _follow(browser, again.json()["url"]))
            assert done.status_code == 200, done.text
            after = (await client.get(f"/v1/stored-connections/{name}")).json()
            for same in ("tenants", "objects", "options", "base_url", "created_at", "enabled", "credentials"):
                assert after[same] == before[same], same
            new = await _credentials(settings, name)
            assert new["refresh_token"] != old["refresh_token"]
            assert new[erp.tenant_credential] == old[erp.tenant_credential] == erp.tenant_value
            _assert_encrypted(tmp_path / "state.db", name, erp)
            await _book_and_refresh(settings, name, erp, sandbox_app)  # the new tokens work

            # The stored organisation differs from the one the sandbox consents for: refused, nothing changed.
            patched = await client.patch(
                f"/v1/stored-connections/{name}", json={"credentials": {erp.tenant_credential: OTHER_ORG[kind]}}
            )
            assert patched.status_code == 200, patched.text
            kept = await _credentials(settings, name)
            again = await _start(client, kind, name, url, tenants=None, base_url=None, reconnect=True)
            refused = await public.get("/oauth/callback", params=await _follow(browser, again.json()["url"]))
            assert refused.status_code == 409, refused.text
            problem = refused.json()
            assert problem["type"].endswith("/organisation-mismatch")
            assert OTHER_ORG[kind] in problem["detail"]
            assert "reconnect refused, nothing changed" in problem["detail"]
            assert await _credentials(settings, name) == kept


def test_cli_reconnect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    erp = ERPS["quickbooks"]
    key = Fernet.generate_key().decode()
    settings = _settings(tmp_path, key)
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", settings.state_url)
    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", key)
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(settings.routing_file))
    monkeypatch.setenv("LEDGERFLOW_OAUTH_CLIENT_SECRET", erp.client_secret)
    monkeypatch.setenv("LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT", "true")
    runner = CliRunner()
    name = "qbo-cli"

    def consent(*extra: str) -> str:
        args = ["connections", "connect", "quickbooks", "--name", name, "--redirect-uri", REDIRECT]
        result = runner.invoke(cli, [*args, "--client-id", erp.client_id, "--oauth-root", url, *extra])
        assert result.exit_code == 0, result.output
        consent_url = next(line for line in result.stdout.splitlines() if line.startswith("http"))
        callback = _consent(consent_url)
        return REDIRECT + "?" + "&".join(f"{k}={v}" for k, v in callback.items())

    with _sandbox_thread(erp.sandbox.create_app()) as url:
        missing = runner.invoke(
            cli,
            ["connections", "connect", "quickbooks", "--name", name, "--redirect-uri", REDIRECT, "--client-id", "i"],
        )
        assert missing.exit_code == 2
        assert "--tenant" in missing.output
        done = runner.invoke(cli, ["connections", "complete", "--url", consent("--tenant", "acme", "--base-url", url)])
        assert done.exit_code == 0, done.output
        old = asyncio.run(_credentials(settings, name))
        taken = runner.invoke(
            cli,
            [
                *("connections", "connect", "quickbooks", "--name", name, "--tenant", "acme"),
                *("--redirect-uri", REDIRECT, "--client-id", erp.client_id, "--oauth-root", url),
            ],
        )
        assert taken.exit_code == 2
        assert "reconnect it" in taken.output

        done = runner.invoke(cli, ["connections", "complete", "--url", consent("--reconnect")])
        assert done.exit_code == 0, done.output
        new = asyncio.run(_credentials(settings, name))
        assert new["refresh_token"] != old["refresh_token"]
        assert new["realm_id"] == old["realm_id"]

        updated = runner.invoke(
            cli, ["connections", "update", name, "--credential", f"realm_id={OTHER_ORG['quickbooks']}"]
        )
        assert updated.exit_code == 0, updated.output
        refused = runner.invoke(cli, ["connections", "complete", "--url", consent("--reconnect")])
        assert refused.exit_code == 2
        assert f"connection {name!r} is connected to {OTHER_ORG['quickbooks']!r}" in " ".join(refused.output.split())
        assert asyncio.run(_credentials(settings, name))["refresh_token"] == new["refresh_token"]
