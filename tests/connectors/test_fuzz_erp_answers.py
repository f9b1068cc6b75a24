"""Fuzz the connectors' response parsing: mutated ERP answers never make a connector fail untyped.

Every request a connector sends goes to the ERP's real sandbox (in process); its answer comes back
either as is or mutated (:mod:`tests.transformers.mutations`: a member replaced by a value of another
JSON type, deleted or wrapped in an array; or the whole body replaced by an HTML page, cut in half,
or ``{}``). Whatever comes back, :meth:`Connector.book` (what the runtime calls) returns a booking
with the ERP's record id or raises a :class:`~ledgerflow.connectors.base.ConnectorError`; anything
else escaping is a failure. Derandomized and bounded (20 examples per ERP).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerflow.connectors.base import ConnectorError
from ledgerflow.connectors.registry import connector_class, sandbox_module
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors.contract import contract_bill, ctx
from tests.transformers.mutations import SURPRISES, mutate, paths

FUZZ = settings(
    max_examples=20, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
ERPS = ["quickbooks", "xero", "netsuite", "sap", "coupa", "http"]


class MutatingTransport(httpx.AsyncBaseTransport):
    """Sends each request to ``app`` and hands back its answer, mutated as ``data`` draws."""

    def __init__(self, app: Any, data: st.DataObject) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.data = data
        self.mutated = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        kind = self.data.draw(st.sampled_from(["keep", "keep", "member", "member", "html", "truncated", "empty"]))
        if kind == "keep" or not response.is_success:
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        self.mutated += 1
        if kind == "html":
            body = b"<html><body>502 Bad Gateway</body></html>"
        elif kind == "truncated":
            body = body[: len(body) // 2]
        elif kind == "empty":
            body = b"{}"
        else:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            where = list(paths(document)) if document is not None else []
            if where:
                at = self.data.draw(st.sampled_from(where))
                operation = self.data.draw(st.sampled_from(["replace", "delete", "wrap"]))
                document = mutate(document, at, operation, self.data.draw(st.sampled_from(SURPRISES)))
                body = json.dumps(document).encode()
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")}
        return httpx.Response(response.status_code, headers=headers, content=body)


async def _book_once(erp: str, data: st.DataObject, n: int, tmp: Path) -> None:
    sandbox = sandbox_module(erp)
    app = sandbox.create_app()
    transport = MutatingTransport(app, data)
    store = StateStore(f"sqlite+aiosqlite:///{tmp / f'{erp}-{n}.db'}")
    await store.create_all()
    try:
        async with httpx.AsyncClient(transport=transport, timeout=5) as http:
            # record_id_pointer is an option of the http connector only (unknown options are errors).
            pointer = {"record_id_pointer": "/id"} if erp == "http" else {}
            options = {**pointer, "rate_limit_per_minute": 1_000_000, "max_concurrency": 10}
            config = sandbox.sandbox_connection(
                ConnectionConfig(erp=erp, objects=["bill", "vendor"], options=options), "http://erp.test"
            )
            connector = connector_class(erp)("erp", config, http, store)
            try:
                booked = await connector.book(contract_bill(f"in_fuzz_{n}"), ctx(f"k-fuzz-{erp}-{n}"))
            except ConnectorError:
                return
            assert booked.erp_record_id
    finally:
        await store.close()


@pytest.mark.parametrize("erp", ERPS)
def test_mutated_erp_answers_give_a_booking_or_a_typed_error(erp: str, tmp_path: Path) -> None:
    counter = iter(range(10**6))

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        asyncio.run(_book_once(erp, data, next(counter), tmp_path))

    run()
