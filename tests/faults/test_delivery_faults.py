"""Delivery guarantees under faults, with the pipeline running as real OS processes.

* kill -9 of the transformer and of a connector, several times, while webhooks flow: nothing
  accepted is lost, nothing is booked twice;
* an ERP outage (429 with Retry-After, 500, slow answers, dropped connections) on one connection:
  it books everything once it recovers, and the healthy connection is not slowed down;
* a poison message (valid JSON the Mercoa mapper rejects) is dead-lettered with its reason and
  does not block the records behind it, even of the same key.

Bills are matched to webhooks by ``DocNumber`` (the Mercoa ``invoiceNumber``, unique per webhook
here) in each sandbox's ``/_sandbox/records`` and by canonical id on ``ledgerflow.results.v1``.
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.contracts.events import deterministic_id
from tests.faults.pipeline import Pipeline, read_topics
from tests.faults.report import ScenarioReport, record_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

CLIENTS = 8
"""Concurrent HTTP clients posting webhooks."""


# --------------------------------------------------------------------------------------------
# Webhooks


@dataclass
class Posted:
    """One webhook sent: the invoice it carries and the ingress's answer."""

    invoice_id: str
    number: str
    amount: Decimal
    status: int = 0
    event_id: str | None = None

    @property
    def canonical_id(self) -> str:
        """Canonical id of the bill the webhook maps to."""
        return f"faults:mercoa:bill:{self.invoice_id}"

    @property
    def accepted(self) -> bool:
        """The ingress answered 200 (Mercoa's success status)."""
        return self.status == 200


def invoice_body(sample: dict[str, Any], posted: Posted, *, line_amount: Decimal | None = None) -> bytes:
    """The Mercoa ``invoice.created`` sample with this invoice's id, number and amount (one line).

    ``line_amount`` different from the amount makes a webhook whose totals do not reconcile.
    """
    payload = copy.deepcopy(sample)
    invoice = payload["invoice"]
    invoice["id"] = posted.invoice_id
    invoice["invoiceNumber"] = posted.number
    invoice["amount"] = orjson.Fragment(str(posted.amount))
    line = invoice["lineItems"][0]
    line_total = posted.amount if line_amount is None else line_amount
    line["amount"] = orjson.Fragment(str(line_total))
    line["unitPrice"] = orjson.Fragment(str(line_total))
    line["quantity"] = 1
    return orjson.dumps(payload)


def invoices(tag: str, count: int, start: int = 0) -> list[Posted]:
    """``count`` distinct invoices: ids and numbers carry ``tag``, amounts vary (with cents)."""
    return [
        Posted(f"in_{tag}_{i:05d}", f"{tag}-{i:05d}", Decimal(100 + i % 900) + Decimal(i % 97) / 100)
        for i in range(start, start + count)
    ]


async def post_all(pipe: Pipeline, sample: dict[str, Any], batch: Sequence[Posted], clients: int = CLIENTS) -> None:
    """POST every webhook of ``batch`` with ``clients`` concurrent clients; fill in status and event id."""
    queue: asyncio.Queue[Posted] = asyncio.Queue()
    for item in batch:
        queue.put_nowait(item)

    async def client() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as http:
            while not queue.empty():
                item = queue.get_nowait()
                item.status, item.event_id = await pipe.post_mercoa(invoice_body(sample, item), http)

    await asyncio.gather(*(client() for _ in range(clients)))


# --------------------------------------------------------------------------------------------
# Reading back


async def read_results(pipe: Pipeline, canonical_ids: set[str]) -> dict[tuple[str, str], list[SyncResult]]:
    """Results of ``canonical_ids`` by (canonical id, connection), in the order they were written.

    Results are keyed by canonical id, so all results of one record are in one partition.
    """
    messages = await pipe.read_topic(pipe.topics.results)
    by_record: dict[tuple[str, str], list[SyncResult]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        if message.key is None or message.key.decode() not in canonical_ids:
            continue
        result = SyncResult.model_validate_json(message.value)
        by_record[(result.canonical_id, result.connection)].append(result)
    return by_record


def booked(
    results: dict[tuple[str, str], list[SyncResult]], batch: Iterable[Posted], connections: Iterable[str]
) -> bool:
    """Every accepted webhook of ``batch`` has a booking result on every connection.

    A booking result is ``succeeded``, or ``duplicate`` naming an ERP record: the latter alone
    happens when a connector died between its binder write and publishing the ``succeeded``
    result (see ``test_crash_window.py``); it still says where the record is booked.
    """
    return all(
        any(_booking(r) for r in results.get((p.canonical_id, c), [])) for p in batch if p.accepted for c in connections
    )


def _booking(result: SyncResult) -> bool:
    return result.outcome is Outcome.SUCCEEDED or (
        result.outcome is Outcome.DUPLICATE and result.erp_record_id is not None
    )


async def wait_until_booked(
    pipe: Pipeline,
    batch: Sequence[Posted],
    connections: Sequence[str],
    timeout: float = 120.0,  # noqa: ASYNC109
) -> dict[tuple[str, str], list[SyncResult]]:
    """Poll the results topic until :func:`booked` holds (or ``timeout`` seconds passed); return the results."""
    ids = {p.canonical_id for p in batch}
    deadline = time.monotonic() + timeout
    while True:
        results = await read_results(pipe, ids)
        if booked(results, batch, connections) or time.monotonic() > deadline:
            return results
        pipe.assert_alive()
        await asyncio.sleep(1.0)


@dataclass
class Ledger:
    """What each connection holds for a batch, compared with what the ingress accepted."""

    accepted: int = 0
    booked: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    unreported: list[str] = field(default_factory=list)
    redeliveries: dict[str, int] = field(default_factory=dict)
    duplicate_results: dict[str, int] = field(default_factory=dict)
    failed_rounds: dict[str, int] = field(default_factory=dict)

    def report(self, scenario: str, dead_lettered: int = 0) -> ScenarioReport:
        """Record this ledger in the fault suite's report (``tests/faults/report.py``)."""
        return record_scenario(
            ScenarioReport(
                scenario,
                accepted=self.accepted,
                booked=min(self.booked.values(), default=0),
                dead_lettered=dead_lettered,
                lost=len(self.lost),
                duplicated=len(self.duplicated),
                note=f"per connection {self.booked}",
            )
        )

    def line(self) -> str:
        """One printable summary line."""
        return (
            f"accepted={self.accepted} booked={self.booked} lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"wrong={len(self.wrong)} booked_without_succeeded_result={self.unreported} "
            f"redeliveries={self.redeliveries} duplicate_results={self.duplicate_results} "
            f"failed_rounds={self.failed_rounds}"
        )


async def audit(
    pipe: Pipeline,
    batch: Sequence[Posted],
    connections: Sequence[str],
    results: dict[tuple[str, str], list[SyncResult]],
) -> Ledger:
    """Check every accepted webhook: one bill per ERP with its amount, its latest real outcome succeeded.

    ``lost``: no bill, or no booking result (:func:`_booking`). ``duplicated``: more than one bill
    with its number. ``wrong``: the bill's total differs, the latest non-duplicate outcome is not
    succeeded, or a booking result names another ERP record than the bill in the sandbox.
    ``unreported``: booked once, but the only results are ``duplicate`` (no ``succeeded``).
    """
    ledger = Ledger(accepted=sum(p.accepted for p in batch))
    for connection in connections:
        bills: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in await pipe.sandbox_bills(connection):
            bills[str(record["record"].get("DocNumber"))].append(record)
        ledger.booked[connection] = 0
        ledger.redeliveries[connection] = 0
        ledger.duplicate_results[connection] = 0
        ledger.failed_rounds[connection] = 0
        for posted in batch:
            if not posted.accepted:
                continue
            found = bills.get(posted.number, [])
            history = results.get((posted.canonical_id, connection), [])
            succeeded = [r for r in history if r.outcome is Outcome.SUCCEEDED]
            bookings = [r for r in history if _booking(r)]
            ledger.redeliveries[connection] += max(0, len(history) - 1)
            ledger.duplicate_results[connection] += sum(r.outcome is Outcome.DUPLICATE for r in history)
            ledger.failed_rounds[connection] += sum(r.outcome is Outcome.FAILED for r in history)
            if not found or not bookings:
                outcomes = [r.outcome.value for r in history]
                ledger.lost.append(f"{connection} {posted.number}: {len(found)} bill(s), results {outcomes}")
                continue
            ledger.booked[connection] += 1
            if not succeeded:
                ledger.unreported.append(f"{connection} {posted.number}")
            if len(found) > 1:
                ledger.duplicated.append(f"{connection} {posted.number}: {len(found)} bills")
            bill = found[0]
            real = [r for r in history if r.outcome is not Outcome.DUPLICATE]
            if Decimal(str(bill["total"])) != posted.amount:
                ledger.wrong.append(f"{connection} {posted.number}: total {bill['total']} != {posted.amount}")
            if real and real[-1].outcome is not Outcome.SUCCEEDED:
                ledger.wrong.append(f"{connection} {posted.number}: latest outcome {real[-1].outcome.value}")
            if {r.erp_record_id for r in bookings} != {bill["id"]}:
                ledger.wrong.append(f"{connection} {posted.number}: results name {[r.erp_record_id for r in bookings]}")
    return ledger


def p50_latency(results: dict[tuple[str, str], list[SyncResult]], batch: Iterable[Posted], connection: str) -> float:
    """Median seconds from ingress acceptance to the first succeeded result, on ``connection``."""
    seconds = []
    for posted in batch:
        first = next((r for r in results.get((posted.canonical_id, connection), []) if _booking(r)), None)
        if first is not None and first.accepted_at is not None:
            seconds.append((first.finished_at - first.accepted_at).total_seconds())
    assert seconds, f"no succeeded results on {connection}"
    return statistics.median(seconds)


# --------------------------------------------------------------------------------------------
# 1. kill -9


async def kill_repeatedly(
    pipe: Pipeline, service: str, progress_metric: str, kills: int, *, progress: float = 20, pause: float = 0.5
) -> list[str]:
    """``kill -9`` ``service`` ``kills`` times, each once it has made ``progress`` since its (re)start.

    Progress is read from the process's own ``/metrics`` (``progress_metric``), so every kill
    lands while the worker is busy; the wait for progress is bounded (30 s). After each kill the
    service is restarted after ``pause`` seconds and awaited until ready. Returns a log line per kill.
    """
    log = []
    for round_ in range(1, kills + 1):
        deadline = time.monotonic() + 30
        done = 0.0
        while time.monotonic() < deadline:
            done = await pipe.metric_total(service, progress_metric)
            if done >= progress:
                break
            await asyncio.sleep(0.1)
        pipe.kill9(service)
        killed = time.monotonic()
        await asyncio.sleep(pause)
        await pipe.restart(service)
        log.append(
            f"{service} kill #{round_} after {done:.0f} handled; ready again in {time.monotonic() - killed:.1f}s"
        )
    return log


async def test_kill9_transformer_and_connector_mid_stream_loses_and_duplicates_nothing(
    faults_pipeline: Pipeline, mercoa_sample: bytes
) -> None:
    pipe = faults_pipeline
    connections = list(pipe.config.connections)
    sample = orjson.loads(mercoa_sample)
    batch = invoices("k" + uuid.uuid4().hex[:7], 1000)
    started = time.monotonic()

    posting = asyncio.create_task(post_all(pipe, sample, batch))
    kill_logs = await asyncio.gather(
        kill_repeatedly(pipe, "transformer", "ledgerflow_transform_events_total", 3),
        kill_repeatedly(pipe, f"connector-{connections[0]}", "ledgerflow_connector_results_total", 3),
    )
    await posting
    results = await wait_until_booked(pipe, batch, connections)
    ledger = await audit(pipe, batch, connections, results)
    canonical = await pipe.read_topic(pipe.topics.canonical("bill"))
    ids = {p.canonical_id for p in batch}
    per_record: dict[str, int] = defaultdict(int)
    for message in canonical:
        if message.key is not None and message.key.decode() in ids:
            per_record[message.key.decode()] += 1
    transformer_redeliveries = sum(n - 1 for n in per_record.values())

    for line in (*kill_logs[0], *kill_logs[1]):
        print(line)
    print(f"kill -9: {ledger.line()} transformer_redeliveries={transformer_redeliveries} ")
    ledger.report("kill -9 transformer and connector, several times")
    print(f"kill -9: {time.monotonic() - started:.1f}s; statuses {sorted({p.status for p in batch})}")

    assert {p.status for p in batch} <= {200, 503}
    assert ledger.accepted >= 0.95 * len(batch)
    assert ledger.lost == []
    assert ledger.duplicated == []
    assert ledger.wrong == []
    assert ledger.booked == dict.fromkeys(connections, ledger.accepted)
    # ledger.unreported (booked, but only `duplicate` results) is printed, not asserted here: it
    # depends on where a kill lands; test_crash_window.py shows the gap deterministically.
    assert len(kill_logs[0]) == 3
    assert len(kill_logs[1]) == 3
    # The kills landed on work in flight: something was handled twice (and absorbed).
    assert transformer_redeliveries + sum(ledger.redeliveries.values()) > 0


async def test_kill9_ingress_mid_stream_loses_nothing_it_accepted(
    faults_pipeline: Pipeline, mercoa_sample: bytes
) -> None:
    """kill -9 of the ingress while senders post: what it answered 2xx was on the broker (acks=all)."""
    pipe = faults_pipeline
    connections = list(pipe.config.connections)
    sample = orjson.loads(mercoa_sample)
    batch = invoices("i" + uuid.uuid4().hex[:7], 150)
    queue: asyncio.Queue[Posted] = asyncio.Queue()
    for item in batch:
        queue.put_nowait(item)

    async def sender() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0)) as http:
            while not queue.empty():
                item = queue.get_nowait()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        item.status, item.event_id = await pipe.post_mercoa(invoice_body(sample, item), http)
                    except httpx.TransportError:  # the ingress is down: senders retry
                        await asyncio.sleep(0.2)
                        continue
                    if item.accepted:
                        break
                    await asyncio.sleep(0.2)

    async def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(p.accepted for p in batch) >= len(batch) // 3:
                break
            await asyncio.sleep(0.05)
        pipe.kill9("ingress")
        await asyncio.sleep(0.5)
        await pipe.restart("ingress")

    await asyncio.gather(killer(), *(sender() for _ in range(CLIENTS)))
    results = await wait_until_booked(pipe, batch, connections)
    ledger = await audit(pipe, batch, connections, results)
    ledger.report("kill -9 ingress mid-stream")
    assert ledger.accepted == len(batch)
    assert ledger.lost == []
    assert ledger.duplicated == []


# --------------------------------------------------------------------------------------------
# 2. ERP outage


OUTAGE_PHASES: tuple[dict[str, Any], ...] = (
    {"status": 429, "retry_after": 1, "count": 100_000},
    {"status": 500, "count": 100_000},
    {"delay": 1.0, "count": 100_000},
    {"drop": True, "count": 100_000},
)
"""One cycle of the outage: throttling with Retry-After, server errors, slow answers, dropped connections."""


async def run_outage(
    pipe: Pipeline,
    connection: str,
    healthy_done: Callable[[], Awaitable[bool]],
    *,
    phase_seconds: float = 2.0,
    min_seconds: float = 8.0,
    max_seconds: float = 12.0,
) -> tuple[datetime, float]:
    """Break ``connection``'s sandbox phase after phase until ``healthy_done()`` (at least one cycle).

    ``max_seconds`` stays below the first retry tier's 10 s delay plus the in-place retries, so a
    record parked at the start of the outage comes back after it ended.
    Returns (the moment the sandbox recovered, outage seconds).
    """
    began = time.monotonic()
    phase = 0
    while True:
        await pipe.arm_fault(connection, **OUTAGE_PHASES[phase % len(OUTAGE_PHASES)])
        phase += 1
        await asyncio.sleep(phase_seconds)
        elapsed = time.monotonic() - began
        if elapsed >= max_seconds or (elapsed >= min_seconds and await healthy_done()):
            break
    await pipe.clear_faults(connection)
    return datetime.now(UTC), time.monotonic() - began


async def test_erp_outage_recovers_without_slowing_the_healthy_erp(
    faults_pipeline: Pipeline, mercoa_sample: bytes
) -> None:
    pipe = faults_pipeline
    healthy, faulty = pipe.config.connections
    both = [healthy, faulty]
    sample = orjson.loads(mercoa_sample)
    tag = "o" + uuid.uuid4().hex[:7]
    baseline = invoices(tag, 150)
    during = invoices(tag, 150, start=150)

    await post_all(pipe, sample, baseline)
    baseline_results = await wait_until_booked(pipe, baseline, both, timeout=60)
    assert booked(baseline_results, baseline, both)
    baseline_p50 = p50_latency(baseline_results, baseline, healthy)
    faulty_errors_before = await _erp_errors(pipe, faulty)

    async def healthy_done() -> bool:
        return booked(await read_results(pipe, {p.canonical_id for p in during}), during, [healthy])

    outage = asyncio.create_task(run_outage(pipe, faulty, healthy_done))
    await asyncio.sleep(0.5)  # the fault is armed before the batch arrives
    await post_all(pipe, sample, during)
    recovered_at, outage_seconds = await outage
    results = await wait_until_booked(pipe, during, both, timeout=90)

    baseline_ledger = await audit(pipe, baseline, both, baseline_results)
    ledger = await audit(pipe, during, both, results)
    outage_p50 = p50_latency(results, during, healthy)
    healthy_last = max(min(r.finished_at for r in results[(p.canonical_id, healthy)] if _booking(r)) for p in during)
    faulty_errors = await _erp_errors(pipe, faulty) - faulty_errors_before
    parked = len(await pipe.read_topic(pipe.topics.retry("connector", 1)))
    print(f"outage: baseline {baseline_ledger.line()}")
    print(f"outage: during   {ledger.line()}")
    ledger.report("ERP outage (429, 5xx, slow, dropped) on one connection")
    print(
        f"outage: {outage_seconds:.1f}s; healthy p50 baseline {baseline_p50:.2f}s, during {outage_p50:.2f}s; "
        f"healthy done {(recovered_at - healthy_last).total_seconds():.1f}s before recovery; "
        f"faulty ERP errors {faulty_errors:.0f}; parked on retry tier 1 (all tests so far) {parked}; "
        f"faulty p50 during {p50_latency(results, during, faulty):.2f}s"
    )

    for ledger_ in (baseline_ledger, ledger):
        assert ledger_.lost == []
        assert ledger_.duplicated == []
        assert ledger_.wrong == []
        assert ledger_.booked == dict.fromkeys(both, ledger_.accepted)
    assert ledger.accepted == len(during)
    assert faulty_errors > 0, "the outage never reached the faulty connection"
    assert healthy_last < recovered_at, "the healthy ERP finished only after the faulty one recovered"
    assert outage_p50 <= max(3 * baseline_p50, baseline_p50 + 3.0)


async def _erp_errors(pipe: Pipeline, connection: str) -> float:
    """ERP requests of ``connection`` that ended in 429, 5xx or a transport error (its connector's counter)."""
    service = f"connector-{connection}"
    return sum(
        [
            await pipe.metric_total(service, "ledgerflow_erp_requests_total", connection=connection, status=status)
            for status in ("429", "5xx", "error")
        ]
    )


# --------------------------------------------------------------------------------------------
# 3. Poison message


async def test_poison_message_is_dead_lettered_and_does_not_block_its_key(
    faults_pipeline: Pipeline, mercoa_sample: bytes
) -> None:
    pipe = faults_pipeline
    connections = list(pipe.config.connections)
    sample = orjson.loads(mercoa_sample)
    tag = "p" + uuid.uuid4().hex[:7]
    key_id, key_number = f"in_{tag}_key", f"{tag}-key"

    poison = Posted(key_id, key_number, Decimal("100.00"))
    poison_body = invoice_body(sample, poison, line_amount=Decimal("50.00"))  # lines ≠ total
    poison.status, poison.event_id = await pipe.post_mercoa(poison_body)
    same_key = [Posted(key_id, key_number, Decimal(200 + j) + Decimal("0.25")) for j in range(20)]
    for posted in same_key:  # one after the other: their order on the partition is the order sent
        posted.status, posted.event_id = await pipe.post_mercoa(invoice_body(sample, posted))
    others = invoices(tag, 30)
    await post_all(pipe, sample, others)

    assert poison.accepted
    assert all(p.accepted for p in [*same_key, *others])
    canonical_id = poison.canonical_id
    event_ids = [deterministic_id(str(p.event_id), canonical_id) for p in same_key]

    def same_key_done(results: dict[tuple[str, str], list[SyncResult]]) -> bool:
        return all(
            {r.event_id for r in results.get((canonical_id, c), []) if r.outcome is Outcome.SUCCEEDED} >= set(event_ids)
            for c in connections
        )

    deadline = time.monotonic() + 90
    while True:
        results = await wait_until_booked(pipe, others, connections, timeout=90)
        results.update(await read_results(pipe, {canonical_id}))
        if same_key_done(results) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)

    dead = [
        m
        for m in await read_topics(pipe.config.bootstrap_servers, [pipe.topics.dlq("transform")])
        if m.key == key_id.encode()
    ]
    ledger = await audit(pipe, others, connections, results)
    print(
        f"poison: {len(dead)} dead letter(s), same-key results {[len(results[(canonical_id, c)]) for c in connections]}"
    )
    print(f"poison: others {ledger.line()}")

    assert len(dead) == 1
    letter = dead[0]
    assert letter.value == poison_body
    assert letter.headers["ce_id"] == poison.event_id
    assert letter.headers["ledgerflow_dlq_stage"] == "transform"
    assert letter.headers["ledgerflow_dlq_reason"] == "invalid-record"
    assert letter.headers["ledgerflow_dlq_original_topic"] == pipe.topics.raw("mercoa")
    assert "total" in letter.headers["ledgerflow_dlq_detail"].lower()
    for connection in connections:
        history = results[(canonical_id, connection)]
        succeeded = [r.event_id for r in history if r.outcome is Outcome.SUCCEEDED]
        # Every good version booked, in the order sent (first seen order), none for the poison.
        assert list(dict.fromkeys(succeeded)) == event_ids
        bills = [b for b in await pipe.sandbox_bills(connection) if b["record"].get("DocNumber") == key_number]
        assert len(bills) == 1
        assert Decimal(str(bills[0]["total"])) == same_key[-1].amount
    assert ledger.lost == []
    assert ledger.duplicated == []
    assert ledger.wrong == []
