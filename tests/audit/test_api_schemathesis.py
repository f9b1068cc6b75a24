"""Property-based checks of the sync-records API against its own OpenAPI document (schemathesis).

The API runs on loopback in a thread with its own event loop (a seeded SQLite store, a recording
publisher); every documented operation gets generated requests, with an admin key and without
one. It must never answer a 5xx — NUL bytes and other control characters in filters included —,
every error must be a problem document with the answer's status, and every answer must match the
documented status codes, content types and schemas.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledgerflow.audit.api import create_app
from ledgerflow.audit.auth import Authenticator, KeyStore
from ledgerflow.audit.store import AuditStore, DeadLetterIn
from ledgerflow.contracts import Outcome
from ledgerflow.core.asgi import serve
from ledgerflow.core.settings import Settings
from tests.audit.api_helpers import audit_api
from tests.audit.audit_helpers import T0, make_result


def _serve_in_thread(folder: Path, started: queue.Queue[tuple[str, str]], stop: threading.Event) -> None:
    async def main() -> None:
        async with audit_api(folder) as api:
            for n in range(1, 4):
                outcome = Outcome.FAILED if n % 2 else Outcome.SUCCEEDED
                await api.store.ingest(make_result(n, outcome=outcome, tenant="acme" if n < 3 else "beta"), f"r-{n}")
            await api.store.put_dead_letter(
                DeadLetterIn(
                    stage="transform",
                    topic="ledgerflow.dlq.transform",
                    partition=0,
                    offset=1,
                    timestamp=T0,
                    key=b"k",
                    value=b"\xff not json",
                    headers={"ledgerflow_dlq_reason": "invalid-record", "ledgerflow_dlq_original_topic": "t"},
                )
            )
            key = await api.key(["admin"], ["*"])
            async with serve(api.app, host="127.0.0.1", port=0) as url:
                started.put((url, key))
                await asyncio.to_thread(stop.wait)

    asyncio.run(main())


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    started: queue.Queue[tuple[str, str]] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=_serve_in_thread, args=(tmp_path_factory.mktemp("schemathesis"), started, stop), daemon=True
    )
    thread.start()
    yield started.get(timeout=30)
    stop.set()
    thread.join(timeout=10)


def _openapi() -> dict[str, Any]:
    """The API's OpenAPI document (building the app opens no connection)."""
    store = AuditStore("sqlite+aiosqlite://")
    app = create_app(store, _no_publish, Settings(), authenticator=Authenticator(KeyStore(store.engine)))
    return app.openapi()


async def _no_publish(*_: object) -> None:
    return None


schema = schemathesis.openapi.from_dict(_openapi())
PUBLIC = {"/oauth/callback"}
"""Operations without authentication: the OAuth redirect URI (its single-use state is the credential)."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_every_error_is_a_documented_problem(case: Any, live_api: tuple[str, str]) -> None:
    url, key = live_api
    generated = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    for authorization in (f"Bearer {key}", None):
        case.headers = {**generated, **({"Authorization": authorization} if authorization else {})}
        response = case.call(base_url=url)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert response.headers["content-type"][0] == "application/problem+json"
            assert orjson.loads(response.content)["status"] == response.status_code
        if authorization is None and response.status_code != 405 and case.path not in PUBLIC:
            assert response.status_code == 401, (case.method, case.path, response.status_code)
