"""The sync-records API v1 in-process: authentication, scopes, tenants, problems, attempts, dead letters, keys."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from prometheus_client import REGISTRY

from ledgerflow.audit.auth import OidcConfig
from ledgerflow.audit.console import csrf_token
from ledgerflow.audit.consumer import AuditConsumer
from ledgerflow.audit.main import rate_limits
from ledgerflow.audit.store import CanonicalEvent, DeadLetterIn
from ledgerflow.audit.tables import sync_record_id
from ledgerflow.contracts import Difference, ErrorInfo, Outcome
from ledgerflow.core.settings import Routing, Settings
from tests.audit.api_helpers import AuditApi, audit_api
from tests.audit.audit_helpers import make_result
from tests.records import FakeRecord

PROBLEM = "application/problem+json"


async def _seed(api: AuditApi) -> None:
    failed = make_result(1, outcome=Outcome.FAILED, event_id="evt-1")
    await api.store.ingest(failed, "res-1", trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    await api.store.ingest(make_result(2, tenant="beta", outcome=Outcome.FAILED, event_id="evt-2"), "res-2")
    await api.store.ingest(make_result(3, event_id="evt-3"), "res-3")
    body = orjson.dumps(
        {"canonical_id": "mercoa:bill:in_1", "tenant": "acme", "bill_number": "INV-1001", "total": "1234.56"}
    )
    await api.store.put_canonical(
        CanonicalEvent(
            canonical_id="mercoa:bill:in_1",
            object_type="bill",
            tenant="acme",
            event_id="evt-1",
            headers={"ce_id": "evt-1", "ce_tenant": "acme", "ledgerflow_replayed_from": "x:0:1"},
            body=body,
            topic="ledgerflow.bill.v1",
            partition=0,
            offset=7,
            source_id="in_1",
            document_number="INV-1001",
        )
    )


def _dead_letter(offset: int, tenant: str | None, *, original: str | None = "ledgerflow.raw.mercoa") -> DeadLetterIn:
    headers = {
        "ce_id": f"raw-{offset}",
        "ledgerflow_dlq_stage": "transform",
        "ledgerflow_dlq_reason": "invalid-record",
        "ledgerflow_dlq_detail": "total 10 != lines 12; account 000123456789",
        "ledgerflow_dlq_attempts": "1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    if tenant:
        headers["ce_tenant"] = tenant
    if original:
        headers["ledgerflow_dlq_original_topic"] = original
    return DeadLetterIn(
        stage="transform",
        topic="ledgerflow.dlq.transform",
        partition=0,
        offset=offset,
        timestamp=datetime(2026, 11, 30, 9, 0, offset, tzinfo=UTC),
        key=b"in_1",
        value=b'{"id": "in_1"}',
        headers=headers,
    )


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_request_authenticates_and_errors_are_problems(tmp_path: Path) -> None:
    refused_401 = _sample("ledgerflow_audit_requests_refused_total", {"status": "401"})
    refused_403 = _sample("ledgerflow_audit_requests_refused_total", {"status": "403"})
    async with audit_api(tmp_path) as api:
        await _seed(api)
        reader = await api.key(["read"], ["acme"])
        async with api.client() as anonymous:
            for method, path in (
                ("GET", "/v1/sync-records"),
                ("GET", "/v1/dead-letters"),
                ("POST", "/v1/sync-records/x/retry"),
                ("GET", "/v1/keys"),
            ):
                answer = await anonymous.request(method, path)
                assert answer.status_code == 401, path
                assert answer.headers["content-type"] == PROBLEM
                assert answer.headers["www-authenticate"].startswith("Bearer")
        async with api.client("lfk_0123456789abcdef_" + "x" * 43) as forged:
            assert (await forged.get("/v1/sync-records")).status_code == 401
        async with api.client(reader) as client:
            nul = await client.get("/v1/sync-records", params={"q": "in_1\x00"})
            assert nul.status_code == 400
            assert nul.headers["content-type"] == PROBLEM
            assert nul.json()["type"].endswith("/bad-request")
            assert (await client.get("/v1/nothing-here")).headers["content-type"] == PROBLEM
            forbidden = await client.post(f"/v1/sync-records/{sync_record_id('mercoa:bill:in_1', 'qbo-main')}/retry")
            assert forbidden.status_code == 403
            assert forbidden.headers["content-type"] == PROBLEM
            assert (await client.get("/v1/keys")).status_code == 403
            assert api.published == []
    assert _sample("ledgerflow_audit_requests_refused_total", {"status": "401"}) - refused_401 == 5
    assert _sample("ledgerflow_audit_requests_refused_total", {"status": "403"}) - refused_403 == 2


async def test_a_key_sees_only_its_tenants(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        await _seed(api)
        acme = await api.key(["redrive"], ["acme"])
        beta_record = sync_record_id("mercoa:bill:in_2", "qbo-main")
        async with api.client(acme) as client:
            listed = (await client.get("/v1/sync-records")).json()["data"]
            assert {r["tenant"] for r in listed} == {"acme"}
            assert (await client.get("/v1/sync-records", params={"tenant": "beta"})).status_code == 404
            assert (await client.get(f"/v1/sync-records/{beta_record}")).status_code == 404
            assert (await client.post(f"/v1/sync-records/{beta_record}/retry")).status_code == 404
            counts = (await client.get("/v1/sync-records/counts")).json()
            assert counts == {"total": 2, "by_outcome": {"failed": 1, "succeeded": 1}}
            connections = (await client.get("/v1/connections")).json()
            assert [c["tenants"] for c in connections] == [["acme"]]
            bulk = (await client.post("/v1/sync-records/retry", json={})).json()
            assert [r["id"] for r in bulk["redriven"]] == [sync_record_id("mercoa:bill:in_1", "qbo-main")]
        assert {p.headers["ce_tenant"] for p in api.published} == {"acme"}


async def test_detail_search_and_redrive(tmp_path: Path) -> None:
    redrives = _sample("ledgerflow_redrives_total", {"tenant": "acme", "connection": "qbo-main"})
    async with audit_api(tmp_path) as api:
        await _seed(api)
        key = await api.key(["redrive"], ["*"])
        record = sync_record_id("mercoa:bill:in_1", "qbo-main")
        async with api.client(key) as client:
            for q in ("in_1", "INV-1001", "evt-1", "res-1"):
                found = (await client.get("/v1/sync-records", params={"q": q})).json()["data"]
                assert [r["id"] for r in found] == [record], q
            detail = (await client.get(f"/v1/sync-records/{record}")).json()
            assert detail["document_number"] == "INV-1001"
            assert detail["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
            assert detail["attempts"][0]["http_status"] == 400
            first = await client.post(f"/v1/sync-records/{record}/retry")
            assert first.status_code == 202
            again = await client.post(f"/v1/sync-records/{record}/retry")
            assert again.json()["event_id"] == first.json()["event_id"]
            done = sync_record_id("mercoa:bill:in_3", "qbo-main")
            assert (await client.post(f"/v1/sync-records/{done}/retry")).status_code == 409
        assert _sample("ledgerflow_redrives_total", {"tenant": "acme", "connection": "qbo-main"}) - redrives == 2
        sent = api.published[0]
        assert sent.topic == "ledgerflow.bill.v1"
        assert sent.headers["ledgerflow_target_connection"] == "qbo-main"
        assert sent.headers["ledgerflow_retry_of"] == "evt-1"
        assert "ledgerflow_replayed_from" not in sent.headers


async def test_every_attempt_is_its_own_row_with_its_details(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        first = make_result(1, outcome=Outcome.FAILED, event_id="evt-1", minutes=0, http_status=503)
        second = make_result(
            1,
            outcome=Outcome.FAILED,
            event_id="evt-1",
            minutes=1,
            http_status=200,
            error=ErrorInfo(
                code="erp.mismatch",
                message="read-back differs",
                retriable=False,
                differences=[Difference(field="total", expected="1234.56", actual="1234.00")],
            ),
        )
        await api.store.ingest(first, "res-tier-0")
        await api.store.ingest(second, "res-tier-1")
        key = await api.key(["read"], ["*"])
        async with api.client(key) as client:
            detail = (await client.get(f"/v1/sync-records/{sync_record_id('mercoa:bill:in_1', 'qbo-main')}")).json()
        assert detail["attempt_count"] == 2
        assert [a["http_status"] for a in detail["attempts"]] == [503, 200]
        assert [a["error_code"] for a in detail["attempts"]] == ["erp.validation", "erp.mismatch"]
        assert detail["attempts"][1]["differences"] == [{"field": "total", "expected": "1234.56", "actual": "1234.00"}]
        async with api.client() as browser:
            assert (await browser.post("/console/login", data={"key": key})).status_code == 303
            page = (await browser.get(f"/console/records/{detail['id']}")).text
        assert "Read-back differences" in page
        assert "<td>total</td><td>1234.56</td><td>1234.00</td>" in page


async def test_dead_letters_are_listed_masked_and_replayed_like_the_cli(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        assert await api.store.put_dead_letter(_dead_letter(1, "acme"))
        assert not await api.store.put_dead_letter(_dead_letter(1, "acme"))  # redelivered: stored once
        await api.store.put_dead_letter(_dead_letter(2, "beta"))
        await api.store.put_dead_letter(_dead_letter(3, None))
        await api.store.put_dead_letter(_dead_letter(4, "acme", original=None))
        acme = await api.key(["redrive"], ["acme"])
        everyone = await api.key(["redrive"], ["*"])
        async with api.client(acme) as client:
            listed = (await client.get("/v1/dead-letters", params={"stage": "transform"})).json()["data"]
            assert sorted(d["tenant"] for d in listed) == ["acme", "acme"]
            first = next(d for d in listed if d["original_topic"])
            assert first["reason"] == "invalid-record"
            assert "000123456789" not in first["detail"]
            assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
            detail = (await client.get(f"/v1/dead-letters/{first['id']}")).json()
            assert detail["body"] == {"id": "in_1"}
            beta = (await client.get("/v1/dead-letters", params={"tenant": "beta"})).status_code
            assert beta == 404
            replayed = await client.post(f"/v1/dead-letters/{first['id']}/replay")
            assert replayed.status_code == 200, replayed.text
            dry = (await client.post("/v1/dead-letters/replay", json={"dry_run": True})).json()
            assert len(dry["replayed"]) == 1
            assert len(dry["skipped"]) == 1
        assert len(api.published) == 1
        sent = api.published[0]
        assert sent.topic == "ledgerflow.raw.mercoa"
        assert sent.key == b"in_1"
        assert sent.value == b'{"id": "in_1"}'
        assert sent.headers["ce_id"] == "raw-1"
        assert sent.headers["ledgerflow_replayed_from"] == "ledgerflow.dlq.transform:0:1"
        assert not [h for h in sent.headers if h.startswith("ledgerflow_dlq_")]
        async with api.client(everyone) as client:
            counts = (await client.get("/v1/dead-letters/counts")).json()
            assert counts == {"total": 4, "by_stage": {"transform": 4}}
            everything = (await client.post("/v1/dead-letters/replay", json={"stages": ["transform"]})).json()
            assert len(everything["replayed"]) == 3
            assert everything["replayed"][0]["replay_count"] == 1  # as read before this replay
        assert [p.headers["ce_id"] for p in api.published[1:]] == ["raw-1", "raw-2", "raw-3"]


async def test_keys_are_managed_by_admins_and_revocation_is_immediate(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        admin = await api.key(["admin"], ["acme"])
        async with api.client(admin) as client:
            assert (await client.get("/v1/me")).json()["scopes"] == ["read", "redrive", "admin"]
            made = await client.post("/v1/keys", json={"name": "ci", "scopes": ["read"], "tenants": ["acme"]})
            assert made.status_code == 201
            created = made.json()
            assert created["key"].startswith("lfk_")
            wider = await client.post("/v1/keys", json={"name": "x", "scopes": ["read"], "tenants": ["*"]})
            assert wider.status_code == 404
            listed = (await client.get("/v1/keys")).json()
            assert "key" not in listed[0]
            assert {k["name"] for k in listed} == {"test", "ci"}
            async with api.client(created["key"]) as ci:
                assert (await ci.get("/v1/sync-records")).status_code == 200
                assert (await client.delete(f"/v1/keys/{created['id']}")).status_code == 204
                assert (await ci.get("/v1/sync-records")).status_code == 401
        rows = await api.keys.list(include_revoked=True)
        assert all(r.secret_hash.startswith("$argon2id$") for r in rows)
        assert created["key"].split("_", 2)[2] not in str([r.secret_hash for r in rows])


class _Jwks:
    """A JWKS endpoint on loopback serving one RSA public key."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk: dict[str, Any] = orjson.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
        body = orjson.dumps({"keys": [jwk]})
        documents: dict[str, bytes] = {"/jwks": body}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                document = documents.get(self.path)
                self.send_response(200 if document else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(document or b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.issuer}/jwks"
        documents["/.well-known/openid-configuration"] = orjson.dumps({"issuer": self.issuer, "jwks_uri": self.url})
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        base = {"iss": "https://idp.test", "aud": "ledgerflow", "sub": "u1", "iat": now, "exp": now + 300}
        return jwt.encode({**base, **claims}, self.private, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def jwks() -> Iterator[_Jwks]:
    server = _Jwks()
    yield server
    server.server.shutdown()


async def test_oidc_tokens_are_verified_against_the_jwks(tmp_path: Path, jwks: _Jwks) -> None:
    config = OidcConfig(issuer="https://idp.test", audience="ledgerflow", jwks_url=jwks.url)
    async with audit_api(tmp_path, oidc=config) as api:
        await _seed(api)
        good = jwks.token(scope="read", ledgerflow_tenants=["acme"], preferred_username="ana")
        async with api.client(good) as client:
            me = (await client.get("/v1/me")).json()
            assert me == {"subject": "u1", "name": "ana", "kind": "oidc", "scopes": ["read"], "tenants": ["acme"]}
            assert {r["tenant"] for r in (await client.get("/v1/sync-records")).json()["data"]} == {"acme"}
            assert (await client.post("/v1/sync-records/retry", json={})).status_code == 403
        for bad in (
            jwks.token(scope="read", aud="someone-else"),
            jwks.token(scope="read", iss="https://evil.test"),
            jwks.token(scope="read", exp=int(time.time()) - 3600),
            jwt.encode({"sub": "u1", "scope": "admin"}, "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256"),
        ):
            async with api.client(bad) as client:
                answer = await client.get("/v1/sync-records")
                assert answer.status_code == 401, answer.text
                assert answer.headers["content-type"] == PROBLEM


async def test_the_source_document_is_found_by_trace_and_masked(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        await _seed(api)
        consumer = AuditConsumer(api.store, Settings())
        raw_headers = {
            "ce_id": "whk-1",
            "ce_type": "invoice.created",
            "ce_tenant": "acme",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        }
        body = orjson.dumps({"id": "in_1", "vendorBankAccount": {"accountNumber": "000123456789"}})
        record = FakeRecord.of("ledgerflow.raw.mercoa", 3, "in_1", body, raw_headers)
        await consumer.handle(record)
        await consumer.handle(record)  # redelivered: stored once
        other = FakeRecord.of(
            "ledgerflow.raw.mercoa", 4, "in_9", b"{}", {**raw_headers, "ce_id": "whk-9", "ce_tenant": "beta"}
        )
        await consumer.handle(other)  # same trace id, another tenant: never shown for acme's record
        assert await api.store.count("source_documents") == 2
        key = await api.key(["read"], ["acme"])
        async with api.client(key) as client:
            detail = (await client.get(f"/v1/sync-records/{sync_record_id('mercoa:bill:in_1', 'qbo-main')}")).json()
        document = detail["source_document"]
        assert document["event_id"] == "whk-1"
        assert document["event_type"] == "invoice.created"
        assert document["body"] == {"id": "in_1", "vendorBankAccount": {"accountNumber": "****6789"}}


async def test_console_bulk_redrive_pages_through_every_failed_record(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        for n in range(1, 31):
            await api.store.ingest(make_result(n, outcome=Outcome.FAILED, event_id=f"evt-{n}"), f"res-{n}")
            if n != 30:  # the audit never saw record 30's canonical record: it cannot be re-driven
                await api.store.put_canonical(
                    CanonicalEvent(
                        canonical_id=f"mercoa:bill:in_{n}",
                        object_type="bill",
                        tenant="acme",
                        event_id=f"evt-{n}",
                        headers={"ce_id": f"evt-{n}", "ce_tenant": "acme"},
                        body=b"{}",
                        topic="ledgerflow.bill.v1",
                        partition=0,
                        offset=n,
                    )
                )
        await api.store.ingest(make_result(99, tenant="beta", outcome=Outcome.FAILED), "res-beta")
        key = await api.key(["redrive"], ["acme"])
        async with api.client() as browser:
            await browser.post("/console/login", data={"key": key})
            csrf = csrf_token(key)
            refused = await browser.post(
                "/console/bulk-redrive", data={"tenant": "acme"}, headers={"hx-request": "true"}
            )
            assert refused.status_code == 403  # no CSRF token
            form: dict[str, str] = {"tenant": "acme"}
            pages = 0
            while True:
                answer = await browser.post(
                    "/console/bulk-redrive", data=form, headers={"x-csrf-token": csrf, "hx-request": "true"}
                )
                assert answer.status_code == 200, answer.text
                pages += 1
                page = answer.text
                if 'name="cursor"' not in page:
                    break
                form = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page))
        assert pages == 2
        assert "Re-driven 30 of 30" in page
        assert "Done: 29 record(s) re-driven, 1 could not be" in page
        assert len(api.published) == 29
        assert {p.headers["ce_tenant"] for p in api.published} == {"acme"}


async def test_connections_health_and_error_rate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    async with audit_api(tmp_path, rate_limits=rate_limits(_limited_routing())) as api:
        recent: dict[str, Any] = {"finished_at": now, "started_at": now, "accepted_at": now}
        await api.store.ingest(make_result(1, connection="qbo", outcome=Outcome.FAILED, **recent), "a")
        await api.store.ingest(make_result(2, connection="qbo", **recent), "b")
        await api.store.ingest(make_result(3, connection="xero", erp="xero", outcome=Outcome.FAILED, **recent), "c")
        await api.store.ingest(make_result(4, connection="netsuite", erp="netsuite"), "d")  # 2026-11-01: long ago
        key = await api.key(["read"], ["*"])
        async with api.client(key) as client:
            connections = {c["connection"]: c for c in (await client.get("/v1/connections")).json()}
        assert {n: c["health"] for n, c in connections.items()} == {
            "qbo": "degraded",
            "xero": "failing",
            "netsuite": "idle",
        }
        assert connections["qbo"]["error_rate_24h"] == 0.5
        assert connections["qbo"]["failed_records"] == 1
        assert connections["xero"]["last_success_at"] is None
        assert connections["netsuite"]["error_rate_24h"] is None
        # qbo: 500/min configured, two requests recorded in the last minute; xero uses its ERP default.
        assert connections["qbo"]["erp_requests_last_minute"] == 2
        assert connections["qbo"]["rate_limit_headroom"] == 498
        assert connections["xero"]["rate_limit_per_minute"] is None


def _limited_routing() -> Routing:
    return Routing.model_validate(
        {
            "tenants": {"acme": {"connections": ["qbo", "xero"]}},
            "connections": {
                "qbo": {"erp": "quickbooks", "options": {"rate_limit_per_minute": 500}},
                "xero": {"erp": "xero"},
            },
        }
    )


@pytest.mark.postgres
async def test_the_api_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """Search, counts, connections, dead letters and keys on PostgreSQL (production's database)."""
    async with audit_api(tmp_path, url=postgres_url) as api:
        await _seed(api)
        await api.store.put_dead_letter(_dead_letter(1, "acme"))
        key = await api.key(["redrive"], ["acme"])
        record = sync_record_id("mercoa:bill:in_1", "qbo-main")
        async with api.client(key) as client:
            for q in ("in_1", "INV-1001", "evt-1", "50%_\\"):
                found = (await client.get("/v1/sync-records", params={"q": q})).json()["data"]
                assert [r["id"] for r in found] == ([record] if q != "50%_\\" else []), q
            assert (await client.get("/v1/sync-records/counts")).json()["total"] == 2
            assert [c["failed_records"] for c in (await client.get("/v1/connections")).json()] == [1]
            (letter,) = (await client.get("/v1/dead-letters")).json()["data"]
            assert (await client.post(f"/v1/dead-letters/{letter['id']}/replay")).status_code == 200
            assert (await client.post(f"/v1/sync-records/{record}/retry")).status_code == 202
        assert len(api.published) == 2


async def test_oidc_jwks_is_discovered_from_the_issuer(tmp_path: Path, jwks: _Jwks) -> None:
    config = OidcConfig(issuer=jwks.issuer, audience="ledgerflow")  # no JWKS URL: discovery
    async with audit_api(tmp_path, oidc=config) as api:
        token = jwks.token(iss=jwks.issuer, scope="read", ledgerflow_tenants="*")
        async with api.client(token) as client:
            assert (await client.get("/v1/me")).json()["tenants"] == ["*"]
    unknown = OidcConfig(issuer=jwks.issuer + "/elsewhere", audience="ledgerflow")
    other = tmp_path / "other"
    other.mkdir()
    async with audit_api(other, oidc=unknown) as api:
        token = jwks.token(iss=jwks.issuer + "/elsewhere", scope="read")
        async with api.client(token) as client:
            answer = await client.get("/v1/me")
            assert answer.status_code == 401
            assert "cannot be found" in answer.json()["detail"]
