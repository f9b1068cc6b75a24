"""The shared connector toolkit: ErpClient, OAuth token managers, sandbox kit (over real loopback HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ledgerflow.connectors.base import PermanentError, RetriableError
from ledgerflow.connectors.sandbox_kit import OAuthIssuer, Sandbox, SandboxControl, serve
from ledgerflow.core.metrics import ERP_REQUESTS
from ledgerflow.core.outbound.client import (
    DEFAULT_ERRORS,
    ErpClient,
    ErrorTable,
    dumps_json,
    loads_json,
    parse_retry_after,
)
from ledgerflow.core.outbound.oauth import ClientCredentialsManager, RefreshTokenManager
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore, StoredToken

TOKEN_PATH = "/oauth/token"


class Toy:
    """A minimal sandbox: bearer-protected echo, a validation error route, a concurrency probe."""

    def __init__(self) -> None:
        self.issuer = OAuthIssuer({"cid": "csecret"}, refresh_tokens=["rt-0"])
        self.sandbox = Sandbox("toy", issuer=self.issuer, token_path=TOKEN_PATH)
        self.in_flight = 0
        self.max_in_flight = 0
        app = self.sandbox.app

        @app.post("/api/echo")
        async def echo(request: Request) -> Response:
            if not self.issuer.verify(request.headers.get("authorization")):
                return JSONResponse({"message": "AuthenticationUnsuccessful"}, status_code=401)
            body = loads_json(await request.body())
            self.sandbox.store.put("thing", self.sandbox.store.next_id(), body)
            return Response(dumps_json({"echo": body}), media_type="application/json")

        @app.post("/api/invalid")
        async def invalid() -> Response:
            return JSONResponse({"message": "Account code '999' is not a valid code", "code": "V1"}, status_code=400)

        @app.get("/api/slow")
        async def slow() -> dict[str, int]:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(0.05)
            self.in_flight -= 1
            return {"ok": 1}


@pytest.fixture
async def toy() -> AsyncIterator[tuple[Toy, str]]:
    t = Toy()
    async with serve(t.sandbox.app) as base_url:
        yield t, base_url


def _config(**options: Any) -> ConnectionConfig:
    return ConnectionConfig.model_validate(
        {
            "erp": "http",
            "credentials": {"client_id": "cid", "client_secret": "csecret", "refresh_token": "rt-0"},
            "options": options,
        }
    )


def _client(
    http: httpx.AsyncClient, base_url: str, *, auth: Any = None, errors: ErrorTable = DEFAULT_ERRORS, **options: Any
) -> ErpClient:
    return ErpClient.for_connection(
        http,
        erp="http",
        connection="toy",
        config=_config(**options),
        base_url=base_url,
        default_rate_per_minute=6000,
        default_concurrency=10,
        auth=auth,
        errors=errors,
    )


def test_decimal_json_is_exact() -> None:
    body = {"Amount": Decimal("1234567890.12345678901"), "Qty": Decimal("1.10"), "n": 3}
    raw = dumps_json(body)
    assert raw == b'{"Amount":1234567890.12345678901,"Qty":1.10,"n":3}'
    assert loads_json(raw) == body
    with pytest.raises(TypeError):
        dumps_json({"x": Decimal("NaN")})


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0


def test_error_overrides() -> None:
    table = DEFAULT_ERRORS.with_overrides(
        {"http.409": "retriable", "6240": {"retriable": False, "code": "erp.duplicate"}}
    )
    assert table.classify(409, None).retriable
    assert table.classify(400, "6240").code == "erp.duplicate"
    assert table.classify(503, None).code == "http.5xx"
    assert table.with_overrides({"http.503": "permanent"}).classify(503, None).retriable is False
    with pytest.raises(ValueError, match="expected"):
        DEFAULT_ERRORS.with_overrides({"http.x": "retriable"})
    # A code that is not an ErrorCode value is a configuration error, not a new code on the wire.
    with pytest.raises(ValueError, match=r"erp\.dup"):
        DEFAULT_ERRORS.with_overrides({"6240": {"retriable": False, "code": "erp.dup"}})


async def test_erp_client_maps_outcomes(toy: tuple[Toy, str], http: httpx.AsyncClient, state: StateStore) -> None:
    t, base = toy
    control = SandboxControl(http, base)
    auth = RefreshTokenManager.from_config(
        http, state, "toy", _config(token_url=base + TOKEN_PATH), erp="http", default_token_url="unused"
    )
    client = _client(http, base, auth=auth, timeout_seconds=0.3)
    before = ERP_REQUESTS.labels("http", "toy", "echo", "2xx")._value.get()

    response = await client.request("POST", "/api/echo", operation="echo", json_body={"Amount": Decimal("10.10")})
    assert loads_json(response.content) == {"echo": {"Amount": Decimal("10.10")}}
    assert ERP_REQUESTS.labels("http", "toy", "echo", "2xx")._value.get() == before + 1

    await control.inject(status=429, retry_after=2, count=1, path_prefix="/api/")
    with pytest.raises(RetriableError) as err:
        await client.request("POST", "/api/echo", operation="echo", json_body={})
    assert (err.value.code, err.value.retry_after, err.value.http_status) == ("http.429", 2.0, 429)

    await control.inject(status=503, count=1)
    with pytest.raises(RetriableError) as err:
        await client.request("POST", "/api/echo", operation="echo", json_body={})
    assert err.value.code == "http.5xx"

    await control.inject(delay=1.0, count=1)
    with pytest.raises(RetriableError) as err:
        await client.request("POST", "/api/echo", operation="echo", json_body={})
    assert err.value.code == "http.timeout"

    await control.inject(drop=True, count=1)
    with pytest.raises(RetriableError) as err:
        await client.request("POST", "/api/echo", operation="echo", json_body={})
    assert err.value.code == "http.transport"

    with pytest.raises(PermanentError) as perm:
        await client.request("POST", "/api/invalid", operation="invalid", json_body={})
    assert perm.value.code == "erp.validation"
    assert "Account code '999' is not a valid code" in perm.value.message

    # Revoked access token: one re-authentication, then success.
    t.issuer.revoke_access_tokens()
    await client.request("POST", "/api/echo", operation="echo", json_body={"k": 1})
    assert auth.refreshes == 2
    # After faults are gone everything goes through.
    records = await control.records("thing")
    assert len(records) >= 2


async def test_unauthenticated_is_permanent(toy: tuple[Toy, str], http: httpx.AsyncClient) -> None:
    _, base = toy
    client = _client(http, base)
    with pytest.raises(PermanentError) as err:
        await client.request("POST", "/api/echo", operation="echo", json_body={})
    assert (err.value.code, err.value.http_status) == ("auth.rejected", 401)


async def test_concurrency_cap_and_rate_limit(toy: tuple[Toy, str], http: httpx.AsyncClient) -> None:
    t, base = toy
    capped = _client(http, base, max_concurrency=2)
    await asyncio.gather(*(capped.request("GET", "/api/slow", operation="slow") for _ in range(6)))
    assert t.max_in_flight == 2

    limited = _client(http, base, rate_limit_per_minute=600, max_concurrency=1)  # one per 0.1 s
    started = time.perf_counter()
    await asyncio.gather(*(limited.request("GET", "/api/slow", operation="slow") for _ in range(4)))
    assert time.perf_counter() - started >= 0.28


async def test_refresh_rotation_persisted_and_single_flight(
    toy: tuple[Toy, str], http: httpx.AsyncClient, state: StateStore
) -> None:
    t, base = toy
    config = _config(token_url=base + TOKEN_PATH)
    manager = RefreshTokenManager.from_config(http, state, "toy", config, erp="http", default_token_url="unused")
    tokens = await asyncio.gather(*(manager.access_token() for _ in range(10)))
    assert len(set(tokens)) == 1
    assert t.issuer.refreshes == 1
    stored = await state.get_token("toy")
    assert stored is not None
    assert stored.refresh_token not in (None, "rt-0")
    assert stored.refresh_token in t.issuer.refresh_tokens
    assert "rt-0" not in t.issuer.refresh_tokens

    # A new process (new manager) with an expired access token refreshes with the *persisted* token.
    await state.put_token("toy", StoredToken(stored.access_token, stored.refresh_token, datetime.now(UTC)))
    again = RefreshTokenManager.from_config(http, state, "toy", config, erp="http", default_token_url="unused")
    assert await again.access_token() != stored.access_token
    rotated = await state.get_token("toy")
    assert rotated is not None
    assert rotated.refresh_token != stored.refresh_token

    # Every refresh token rejected → permanent.
    t.issuer.refresh_tokens.clear()
    await state.put_token("toy", StoredToken("x", rotated.refresh_token, datetime.now(UTC)))
    third = RefreshTokenManager.from_config(http, state, "toy", config, erp="http", default_token_url="unused")
    with pytest.raises(PermanentError) as err:
        await third.access_token()
    assert err.value.code == "auth.refresh_rejected"


async def test_client_credentials(toy: tuple[Toy, str], http: httpx.AsyncClient, state: StateStore) -> None:
    _, base = toy
    good = ClientCredentialsManager.from_config(
        http, state, "cc", _config(token_url=base + TOKEN_PATH, client_auth="body"), erp="http"
    )
    assert (await good.access_token()).startswith("at-")
    bad_config = ConnectionConfig.model_validate(
        {"erp": "coupa", "credentials": {"client_id": "cid", "client_secret": "wrong", "token_url": base + TOKEN_PATH}}
    )
    bad = ClientCredentialsManager.from_config(http, state, "cc-bad", bad_config, erp="coupa")
    with pytest.raises(PermanentError) as err:
        await bad.access_token()
    assert err.value.code == "auth.rejected"
    assert "wrong" not in err.value.message


async def test_idempotent_replay_and_fault_validation(toy: tuple[Toy, str], http: httpx.AsyncClient) -> None:
    t, base = toy
    calls = 0

    async def handler() -> Response:
        nonlocal calls
        calls += 1
        return JSONResponse({"n": calls}, status_code=201)

    first, second = await asyncio.gather(
        t.sandbox.store.idempotent("s", "k1", handler), t.sandbox.store.idempotent("s", "k1", handler)
    )
    assert calls == 1
    assert first.body == second.body
    assert second.status_code == 201
    bad = await http.post(f"{base}/_sandbox/faults", json={"status": 429, "drop": True})
    assert bad.status_code == 422
    assert (await http.delete(f"{base}/_sandbox/faults")).status_code == 204
