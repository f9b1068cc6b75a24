"""The connector's crash window between booking a record and its ``succeeded`` result, made deterministic.

``ConnectorRuntime.handle`` used to write the binder row *before* publishing the ``SyncResult``:
a worker that died in between (kill -9 in ``test_delivery_faults.py`` hit this a few times per
thousand records) left the bill booked and the offset uncommitted, and the redelivered record
found the binder row and published only ``duplicate`` — no ``succeeded`` result for that booking
ever reached ``ledgerflow.results.v1``. The binder is now written after the result is
acknowledged. Here the crash is a failed result publish (the broker never acknowledged it).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks.sandbox import create_app, sandbox_connection
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.base import RawEvent
from ledgerflow.transformers.mercoa.invoice import map_invoice
from tests.records import FakeRecord

pytestmark = pytest.mark.faults


async def test_crash_between_binder_write_and_result_still_reports_the_booking_as_succeeded(
    tmp_path: Path, mercoa_sample: bytes
) -> None:
    settings = Settings(topic_prefix="crash", state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db")
    routing = Routing.model_validate(
        {
            "tenants": {"acme": {"sources": {"mercoa": {"tokens": ["t"]}}, "connections": ["qbo"]}},
            "connections": {"qbo": {"erp": "quickbooks", "objects": ["bill", "vendor"]}},
        }
    )
    raw = EventAttributes(id="raw-1", source="/tenants/acme/mercoa", type="io.ledgerflow.raw.mercoa", tenant="acme")
    (bill,) = map_invoice(
        RawEvent("acme", "mercoa", "invoice.created", orjson.loads(mercoa_sample), mercoa_sample, raw)
    )
    attrs = raw.derive(id="canonical-1", type="io.ledgerflow.bill.v1", subject=bill.canonical_id)
    record = FakeRecord(
        settings.topics.canonical("bill"),
        0,
        7,
        bill.canonical_id.encode(),
        bill.model_dump_json().encode(),
        [(k, v.encode()) for k, v in attrs.to_headers().items()],
    )
    results: list[SyncResult] = []
    broker_down = True

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        if broker_down:
            raise ConnectionError("worker died before the broker acknowledged the result")
        if topic == settings.topics.results:
            results.append(SyncResult.model_validate_json(value))

    state = StateStore(settings.state_url)
    await state.create_all()

    async with serve(create_app()) as url, httpx.AsyncClient() as http:
        config = sandbox_connection(ConnectionConfig(erp="quickbooks", objects=["bill", "vendor"]), url)
        connector = QuickBooksConnector("qbo", config, http, state)
        runtime = ConnectorRuntime(
            connector, state, routing.model_copy(update={"connections": {"qbo": config}}), publish, settings
        )
        with pytest.raises(ConnectionError):
            await runtime.handle(record)  # booked, result lost: the batch is redelivered
        broker_down = False
        await runtime.handle(record)  # the redelivery
        bills = (await http.get(f"{url}/_sandbox/records", params={"kind": "bill"})).json()["records"]
        await connector.aclose()
    await state.close()

    assert len(bills) == 1  # booked once: the ERP idempotency key (requestid) replayed the first answer
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED]  # and the booking is reported as succeeded
