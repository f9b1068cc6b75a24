"""Fault scenarios on one in-process pipeline (``run_stack``), each reported and asserted.

One stack (ingress, transformer, a QuickBooks connection on its sandbox, audit) is shared by the
module's scenarios, each with its own invoice ids; every scenario ends with lost = 0 and
duplicated = 0 and reports accepted / booked / dead-lettered / lost / duplicated
(``tests/faults/report.py``):

* poison records (an authenticated Mercoa ``invoice.created`` whose ``metadata`` is a list) among
  good ones: dead-lettered with their reason, the good ones behind them booked;
* two tenants whose invoices share ids on one shared ERP connection: one document each;
* a stale version delivered after a newer one: skipped as superseded, the ERP keeps the newer;
* the ERP answering 2xx with an HTML page, truncated JSON and no id: retried with the same
  idempotency key, booked once.

Bills are matched by ``DocNumber`` in the sandbox's ``/_sandbox/records``.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.app.stack import RunningStack, run_stack
from ledgerflow.core.settings import Routing, Settings
from tests.faults.pipeline import read_topics
from tests.faults.report import ScenarioReport, record_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

TOKENS = {"acme": "acme-faults-token", "beta": "beta-faults-token"}


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    folder = tmp_path_factory.mktemp("scenarios")
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"scen{uuid.uuid4().hex[:6]}",
        topic_partitions=3,
        state_url=f"sqlite+aiosqlite:///{folder}/state.db",
    )
    routing = Routing.model_validate(
        {
            "tenants": {
                tenant: {"sources": {"mercoa": {"tokens": [token]}}, "connections": ["qbo"]}
                for tenant, token in TOKENS.items()
            },
            "connections": {
                "qbo": {
                    "erp": "quickbooks",
                    "objects": ["bill", "vendor"],
                    "options": {"rate_limit_per_minute": 600_000, "max_concurrency": 16},
                }
            },
        }
    )
    async with run_stack(settings, routing) as running:
        yield running


def _invoice(sample: bytes, invoice_id: str, number: str, amount: str, **extra: Any) -> bytes:
    payload = orjson.loads(sample)
    invoice = copy.deepcopy(payload["invoice"])
    invoice.update(id=invoice_id, invoiceNumber=number, amount=orjson.Fragment(amount), **extra)
    invoice["lineItems"] = invoice["lineItems"][:1]
    invoice["lineItems"][0].update(amount=orjson.Fragment(amount), unitPrice=orjson.Fragment(amount), quantity=1)
    payload["invoice"] = invoice
    return orjson.dumps(payload)


async def _post(stack: RunningStack, tenant: str, body: bytes) -> bool:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{stack.ingress_url}/webhooks/{tenant}/mercoa",
            content=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {TOKENS[tenant]}"},
        )
    return response.is_success


async def _bills(stack: RunningStack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{stack.sandboxes['quickbooks']}/_sandbox/records", params={"kind": "bill"})
    response.raise_for_status()
    records: list[dict[str, Any]] = response.json()["records"]
    return records


async def _documents(
    stack: RunningStack,
    numbers: Iterable[str],
    timeout: float = 60.0,  # noqa: ASYNC109 - a polling deadline, not a cancellation
) -> dict[str, list[dict[str, Any]]]:
    """Sandbox bills by DocNumber for ``numbers``, once each has one (or at ``timeout``), plus a settle pause."""
    wanted = set(numbers)
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[dict[str, Any]]] = {}
        for bill in await _bills(stack):
            number = bill["record"].get("DocNumber")
            if number in wanted:
                found.setdefault(number, []).append(bill["record"])
        if set(found) == wanted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.5)  # a second booking still in flight would show up now
    found = {}
    for bill in await _bills(stack):
        number = bill["record"].get("DocNumber")
        if number in wanted:
            found.setdefault(number, []).append(bill["record"])
    return found


async def _dead_letters(stack: RunningStack, keys: set[str]) -> dict[str, str]:
    """Transform dead letters whose Kafka key (the source record id) is in ``keys``: key → reason."""
    messages = await read_topics(stack.bootstrap_servers, [stack.settings.topics.dlq("transform")])
    return {
        m.key.decode(): m.headers.get("ledgerflow_dlq_reason", "")
        for m in messages
        if m.key is not None and m.key.decode() in keys
    }


def _report(
    name: str, accepted: int, good: set[str], found: dict[str, list[dict[str, Any]]], dead: int, note: str = ""
) -> ScenarioReport:
    return record_scenario(
        ScenarioReport(
            name,
            accepted=accepted,
            booked=sum(1 for n in good if n in found),
            dead_lettered=dead,
            lost=len(good - set(found)),
            duplicated=sum(len(v) - 1 for v in found.values()),
            note=note,
        )
    )


async def test_poison_records_are_dead_lettered_and_the_good_ones_behind_them_booked(
    stack: RunningStack, mercoa_sample: bytes
) -> None:
    tag = uuid.uuid4().hex[:6]
    good: set[str] = set()
    poison: set[str] = set()
    accepted = 0
    for n in range(30):
        number = f"P{tag}-{n:03d}"
        if n % 5 == 2:
            body = _invoice(mercoa_sample, f"in_{number}", number, "20.00", metadata=["not", "an", "object"])
            poison.add(f"in_{number}")
        else:
            body = _invoice(mercoa_sample, f"in_{number}", number, "20.00")
            good.add(number)
        accepted += await _post(stack, "acme", body)
    found = await _documents(stack, good)
    dead = await _dead_letters(stack, poison)
    report = _report("poison records among good ones (Mercoa)", accepted, good, found, len(dead))
    assert accepted == 30
    assert report.lost == 0
    assert report.duplicated == 0
    assert dead == dict.fromkeys(poison, "invalid-record"), "every poison record is dead-lettered with its reason"


async def test_two_tenants_with_colliding_ids_book_one_document_each(stack: RunningStack, mercoa_sample: bytes) -> None:
    tag = uuid.uuid4().hex[:6]
    numbers: set[str] = set()
    accepted = 0
    for n in range(10):
        for tenant in TOKENS:
            number = f"{tenant[0].upper()}{tag}-{n:03d}"
            numbers.add(number)
            # The same Mercoa invoice id for both tenants.
            accepted += await _post(stack, tenant, _invoice(mercoa_sample, f"in_{tag}_{n}", number, "30.00"))
    found = await _documents(stack, numbers)
    report = _report("two tenants, colliding source ids, one connection", accepted, numbers, found, 0)
    assert accepted == 20
    assert report.booked == 20
    assert report.lost == 0
    assert report.duplicated == 0


async def test_a_stale_version_after_a_newer_one_is_not_written(stack: RunningStack, mercoa_sample: bytes) -> None:
    tag = uuid.uuid4().hex[:6]
    number = f"S{tag}"
    newer = _invoice(mercoa_sample, f"in_{number}", number, "75.00", updatedAt="2026-11-30T10:00:00Z")
    older = _invoice(mercoa_sample, f"in_{number}", number, "50.00", updatedAt="2026-11-30T09:00:00Z")
    accepted = int(await _post(stack, "acme", newer))
    found = await _documents(stack, {number})
    accepted += await _post(stack, "acme", older)
    await asyncio.sleep(3.0)  # the older version's turn
    found = await _documents(stack, {number}, timeout=5)
    report = _report("stale version after a newer one", accepted, {number}, found, 0, note="older one skipped")
    assert accepted == 2
    assert report.lost == 0
    assert report.duplicated == 0
    assert Decimal(str(found[number][0]["TotalAmt"])) == Decimal("75.00"), "the ERP keeps the newer version"


@pytest.mark.parametrize("garbage", ["html", "truncated", "no_id"])
async def test_erp_answering_2xx_garbage_is_retried_and_booked_once(
    stack: RunningStack, mercoa_sample: bytes, garbage: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(timeout=10) as client:
        armed = await client.post(
            f"{stack.sandboxes['quickbooks']}/_sandbox/faults",
            json={"body": garbage, "count": 2},
        )
        assert armed.status_code < 300, armed.text
    numbers = {f"G{garbage[0].upper()}{tag}-{n:02d}" for n in range(6)}
    accepted = 0
    for number in sorted(numbers):
        accepted += await _post(stack, "acme", _invoice(mercoa_sample, f"in_{number}", number, "40.00"))
    found = await _documents(stack, numbers)
    async with httpx.AsyncClient(timeout=10) as client:
        await client.delete(f"{stack.sandboxes['quickbooks']}/_sandbox/faults")
    report = _report(f"ERP answers 2xx {garbage} (twice)", accepted, numbers, found, 0)
    assert accepted == 6
    assert report.lost == 0
    assert report.duplicated == 0
