"""``python -m bench.quota``: a backlog of bills into one Xero and one QuickBooks connection, within quota.

Issue 18. The ERPs' quotas, not CPU, bound how fast a backlog is booked: Xero allows 60 calls per
minute, 5 in flight and 5,000 per day per organisation; QuickBooks Online 500 requests per minute
and 10 in flight per company, and 40 batch requests per minute (Intuit, "Building smarter with
Intuit: batch without a scratch", 2023). One call per record books at most 60 bills a minute into
Xero; a batch write books up to 50 (Xero) or 30 (QuickBooks) per call.

What runs, all in this process: each ERP's sandbox (uvicorn on loopback) enforcing those limits
with every window shrunk by a time scale (``--xero-scale``, ``--qbo-scale``: quota seconds per
real second, default 2; the report prints them), a SQLite state store, and a
:class:`~ledgerflow.connectors.runtime.ConnectorRuntime` for the connection, fed the backlog in
consumer batches as the connector worker fetches them
(:meth:`~ledgerflow.connectors.batching.Batcher.fetch_size`; ``--consumer-batch`` to change; the
broker is not part of this figure). The connection is configured as a user would for its
vendor: its published concurrency, a small ``rate_limit_burst`` (Xero 3, QuickBooks 2: what may
go at once after a stall, e.g. while one consumer batch drains and the next fills) and a rate of
``burst + 0.5`` calls per minute under the published one (the vendors count calls in a rolling
minute: bucket plus refill never exceed the limit, half a call spare for clock jitter; Xero 56.5
of 60, QuickBooks 37.5 of 40 batch requests), the vendor's largest batch and the default 200 ms
linger. Vendors
are known already (their ERP ids are on the bills: the vendor sync ran before), so every call is
a bill write.

Figures per ERP, each beside the one-call-per-record baseline (``max_batch: 1``) measured in the
same run on a fresh sandbox (``--xero-baseline-bills`` 150, ``--qbo-baseline-bills`` 600: its
rate is steady, and a Xero baseline of the whole backlog would take 83 quota-minutes and the
organisation's entire daily quota of 5,000 calls):

* bills booked per quota-minute (bills ÷ (wall seconds × scale ÷ 60)) and as a fraction of the
  quota-optimal rate: calls per minute × largest batch, where "calls per minute" is the tightest
  limit that applies to those calls (QuickBooks batch requests: 40, not 500);
* ERP calls made, 429s answered (and after the first one), bills booked twice (two ERP documents
  with one bill number) and bills not booked.

Targets (issue 18): ≥ 0.9 of optimal for both ERPs, zero 429s after the first, every bill booked once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.contracts import Bill, LineItem, Outcome, Reference, SyncResult, VendorRef
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore

__all__ = ["ErpQuota", "main", "run"]

TENANT = "bench"
ROOT = Path(__file__).resolve().parents[1]
TARGET_FRACTION = 0.9


@dataclass(frozen=True)
class ErpQuota:
    """One ERP's published limits and how the benchmark drives it."""

    erp: str
    per_minute: int
    concurrency: int
    max_batch: int
    batch_per_minute: int | None
    """A separate limit on batch requests (QuickBooks 40/min), or None when batch calls count like any."""
    document_kind: str
    number_field: str
    burst: int
    """``rate_limit_burst`` of the connection: calls let through at once after a stall (a consumer
    batch draining); the rate is then set ``burst + 0.5`` under the limit, so that no rolling
    minute ever holds more than the limit (bucket + refill), with half a call for clock jitter."""

    def optimal(self, batched: bool) -> float:
        """Bills per quota-minute at the best the quota allows: calls per minute × records per call."""
        if not batched:
            return float(self.per_minute)
        calls = min(self.per_minute, self.batch_per_minute or self.per_minute)
        return float(calls * self.max_batch)


XERO = ErpQuota("xero", 60, 5, 50, None, "invoice", "InvoiceNumber", burst=3)
QUICKBOOKS = ErpQuota("quickbooks", 500, 10, 30, 40, "bill", "DocNumber", burst=2)


@dataclass
class _Record:
    """A consumed Kafka record as the runtime reads it (``ledgerflow.core.delivery.ConsumedRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))


def _bills(count: int, vendor_id: str, vendor_name: str, gl: str, prefix: str) -> list[_Record]:
    """``count`` approved bills of one known vendor, each with its own bill number, as consumed records."""
    records = []
    for i in range(count):
        amount = Decimal(100 + i % 900) + Decimal("0.25")
        bill = Bill(
            canonical_id=f"{TENANT}:mercoa:bill:{prefix}{i}",
            tenant=TENANT,
            source="mercoa",
            source_id=f"{prefix}{i}",
            source_event="invoice.created",
            vendor=VendorRef(source_id="ent_bench", name=vendor_name, accounting_id=vendor_id),
            bill_number=f"{prefix.upper()}{i:05d}",
            bill_date=date(2026, 11, 2),
            due_date=date(2026, 12, 2),
            currency="USD",
            line_items=[
                LineItem(
                    line_number=1, description="Backlog bill", amount=amount, gl_account=Reference(accounting_id=gl)
                )
            ],
            subtotal=amount,
            total=amount,
        )
        attrs = EventAttributes(
            id=f"evt-{prefix}{i}", source=f"/tenants/{TENANT}/mercoa", type="io.ledgerflow.bill.v1", tenant=TENANT
        )
        headers = [(k, v.encode()) for k, v in attrs.to_headers().items()]
        records.append(
            _Record(
                "ledgerflow.canonical.bill.v1",
                0,
                i,
                bill.canonical_id.encode(),
                bill.model_dump_json().encode(),
                headers,
            )
        )
    return records


def _app(quota: ErpQuota, scale: float) -> Any:
    if quota.erp == "xero":
        return xero_sandbox.create_app(seed_parties=True, time_scale=scale)
    return qbo_sandbox.create_app(seed_parties=True, enforce_limits=True, time_scale=scale)


def _vendor(quota: ErpQuota, app: Any) -> tuple[str, str, str]:
    """A vendor the sandbox holds (id, name) and a GL account of its chart."""
    store = app.state.sandbox.store
    if quota.erp == "xero":
        contact = next(c for c in store.all("contact") if c.get("IsSupplier") and c.get("ContactStatus") == "ACTIVE")
        return str(contact["ContactID"]), str(contact["Name"]), "600394"
    vendor = store.all("vendor")[0]
    return str(vendor["Id"]), str(vendor["DisplayName"]), "600394"


def _connector(quota: ErpQuota, name: str, config: ConnectionConfig, http: Any, state: StateStore) -> Connector:
    if quota.erp == "xero":
        return XeroConnector(name, config, http, state)
    return QuickBooksConnector(name, config, http, state)


async def run_case(
    quota: ErpQuota,
    *,
    bills: int,
    batched: bool,
    scale: float,
    consumer_batch: int | None,
    work: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Book ``bills`` into a fresh sandbox of ``quota.erp`` and measure it (see the module docstring)."""
    app = _app(quota, scale)
    label = f"{quota.erp} {'batched' if batched else 'one call per record'}"
    async with serve(app) as url:
        state = StateStore(f"sqlite+aiosqlite:///{work / f'{quota.erp}-{batched}.db'}")
        await state.create_all()
        http = worker_http_client()
        try:
            options: dict[str, Any] = {
                "rate_limit_per_minute": (quota.per_minute - quota.burst - 0.5) * scale,
                "rate_limit_burst": quota.burst,
                "max_concurrency": quota.concurrency,
                "max_batch": quota.max_batch if batched else 1,
                "timeout_seconds": 30,
                "retry": {"attempts": 20, "timeout": 600, "wait_max_retry_after": 600},
            }
            if quota.batch_per_minute is not None:
                options["batch_rate_limit_per_minute"] = (quota.batch_per_minute - quota.burst - 0.5) * scale
            base = ConnectionConfig(erp=quota.erp, options=options, objects=["bill"])
            sandboxed = (
                xero_sandbox.sandbox_connection(base, url)
                if quota.erp == "xero"
                else qbo_sandbox.sandbox_connection(base, url)
            )
            name = f"{quota.erp}-bench"
            routing = Routing(tenants={TENANT: {"connections": [name]}}, connections={name: sandboxed})
            connector = _connector(quota, name, sandboxed, http, state)
            results: list[SyncResult] = []

            async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
                if topic.endswith("results.v1"):
                    results.append(SyncResult.model_validate_json(value))

            runtime = ConnectorRuntime(connector, state, routing, publish, Settings())
            vendor_id, vendor_name, gl = _vendor(quota, app)
            records = _bills(bills, vendor_id, vendor_name, gl, "q" if batched else "b")
            await connector.check()  # the token, as a running worker already has it
            calls_before = app.state.quota.admitted[""] if app.state.quota else 0
            log(f"{label}: {bills} bills, time scale {scale:g}")
            started = time.perf_counter()
            cpu_started = time.process_time()
            # What the connector worker fetches at once (connectors.runtime.register).
            fetch = consumer_batch or runtime.batcher.fetch_size(200)
            for start in range(0, len(records), fetch):
                await runtime.handle_batch(records[start : start + fetch], concurrency=8)
                done = min(start + fetch, len(records))
                log(f"  {label}: {done}/{bills} in {time.perf_counter() - started:.1f} s")
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            await http.aclose()
            await state.close()
    stored = app.state.sandbox.store.all(quota.document_kind)
    numbers = Counter(str(d.get(quota.number_field)) for d in stored)
    refusals = dict(app.state.quota.refusals)
    throttled = sum(refusals.values())
    outcomes = Counter(r.outcome.value for r in results)
    quota_minutes = wall * scale / 60
    booked = outcomes.get(Outcome.SUCCEEDED.value, 0)
    rate = booked / quota_minutes if quota_minutes else 0.0
    return {
        "erp": quota.erp,
        "batched": batched,
        "bills": bills,
        "time_scale": scale,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "quota_minutes": round(quota_minutes, 3),
        "booked": booked,
        "outcomes": dict(outcomes),
        "erp_documents": len(stored),
        "booked_twice": sum(1 for n in numbers.values() if n > 1),
        "not_booked": bills - len(numbers),
        "erp_calls": app.state.quota.admitted[""] - calls_before,
        "batch_requests": runtime.batcher.requests,
        "throttled_429": throttled,
        "throttled_by_problem": refusals,
        "throttled_after_first": max(0, throttled - 1),
        "bills_per_quota_minute": round(rate, 1),
        "optimal_per_quota_minute": quota.optimal(batched),
        "fraction_of_optimal": round(rate / quota.optimal(batched), 3),
    }


async def cpu_per_bill(quota: ErpQuota, *, bills: int, batched: bool, work: Path) -> dict[str, Any]:
    """The connector runtime's CPU per bill, batched or not, with the sandbox in its own process, limits lifted.

    The sandbox runs as ``python -m bench.e2e --role sandbox`` (its limits lifted), so this
    process's CPU time is the runtime's own: records decoded and validated, binder, mapping, the
    ERP requests and answers, read-back, results (published to a list, not a broker).
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["-m", "bench.e2e", "--role", "sandbox", "--erp", quota.erp, "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    http = worker_http_client()
    state = StateStore(f"sqlite+aiosqlite:///{work / f'cpu-{quota.erp}-{batched}.db'}")
    try:
        for _ in range(300):
            try:
                await http.get(url + "/_sandbox/faults")
                break
            except Exception:
                await asyncio.sleep(0.2)
        await state.create_all()
        options: dict[str, Any] = {
            "rate_limit_per_minute": 6_000_000,
            "max_concurrency": quota.concurrency,
            "max_batch": quota.max_batch if batched else 1,
        }
        if quota.batch_per_minute is not None:
            options["batch_rate_limit_per_minute"] = 6_000_000
        base = ConnectionConfig(erp=quota.erp, options=options, objects=["bill"])
        module = xero_sandbox if quota.erp == "xero" else qbo_sandbox
        config = module.sandbox_connection(base, url)
        name = f"{quota.erp}-cpu"
        routing = Routing(tenants={TENANT: {"connections": [name]}}, connections={name: config})
        connector = _connector(quota, name, config, http, state)

        async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
            return None

        runtime = ConnectorRuntime(connector, state, routing, publish, Settings())
        await connector.check()
        if quota.erp == "xero":
            assert isinstance(connector, XeroConnector)
            vendor, _ = await connector._write_one(
                "PUT", "Contacts", "ContactID", {"Name": "CPU Vendor"}, operation="setup", key="cpu-vendor"
            )
            vendor_id = str(vendor["ContactID"])
        else:
            assert isinstance(connector, QuickBooksConnector)
            vendor, _ = await connector._write(
                "Vendor", {"DisplayName": "CPU Vendor"}, operation="setup", request_id="cpu-vendor"
            )
            vendor_id = str(vendor["Id"])
        records = _bills(bills, vendor_id, "CPU Vendor", "600394", "c" if batched else "d")
        fetch = runtime.batcher.fetch_size(200)
        cpu_started = time.process_time()
        for start in range(0, len(records), fetch):
            await runtime.handle_batch(records[start : start + fetch], concurrency=32)
        cpu = time.process_time() - cpu_started
        return {
            "erp": quota.erp,
            "batched": batched,
            "bills": bills,
            "cpu_ms_per_bill": round(cpu / bills * 1000, 3),
            "batch_requests": runtime.batcher.requests,
        }
    finally:
        await http.aclose()
        await state.close()
        proc.terminate()
        await proc.wait()


async def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Every case of the benchmark; the data of its report."""
    data: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "cases": []}
    with tempfile.TemporaryDirectory(prefix="ledgerflow-quota-") as tmp:
        work = Path(tmp)
        plan = [
            (XERO, args.bills, True, args.xero_scale),
            (XERO, args.xero_baseline_bills, False, args.xero_scale),
            (QUICKBOOKS, args.bills, True, args.qbo_scale),
            (QUICKBOOKS, args.qbo_baseline_bills, False, args.qbo_scale),
        ]
        for quota, bills, batched, scale in plan:
            if bills <= 0:
                continue
            data["cases"].append(
                await run_case(
                    quota,
                    bills=bills,
                    batched=batched,
                    scale=scale,
                    consumer_batch=args.consumer_batch,
                    work=work,
                    log=log,
                )
            )
        if args.cpu:
            data["cpu"] = [
                await cpu_per_bill(quota, bills=args.cpu, batched=batched, work=work)
                for quota in (XERO, QUICKBOOKS)
                for batched in (False, True)
            ]
            for row in data["cpu"]:
                log(
                    f"CPU {row['erp']} {'batched' if row['batched'] else 'one per record'}: {row['cpu_ms_per_bill']} ms"
                )
    return data


def render(data: dict[str, Any]) -> str:
    """The report as Markdown: one row per case, batched beside its baseline, then the targets."""
    lines = [
        "# Quota benchmark (`python -m bench.quota`)",
        "",
        f"Run at {data['started_at']}. Time scale = quota seconds per real second (each sandbox's windows "
        "shrink by it). Optimal = calls per minute × records per call, the tightest limit applying "
        "(Xero 60/min × 50; QuickBooks batch requests 40/min × 30; one call per record: 60 and 500). "
        "The client paces itself at burst + 0.5 calls/min under each limit (Xero 56.5, QuickBooks 37.5 batch "
        "requests, 497.5 requests): its ceiling is 0.942 (Xero) and 0.9375 (QuickBooks) of optimal.",
        "",
        "| ERP | writes | bills | time scale | wall s | quota-min | bills/quota-min | optimal | fraction "
        "| ERP calls | 429s (after first) | booked twice | not booked |",
        "|" + "---|" * 13,
    ]
    for c in data["cases"]:
        lines.append(
            f"| {c['erp']} | {'batch' if c['batched'] else 'one per record'} | {c['bills']:,} | {c['time_scale']:g} "
            f"| {c['wall_s']:.1f} | {c['quota_minutes']:.2f} | {c['bills_per_quota_minute']:,.1f} "
            f"| {c['optimal_per_quota_minute']:,.0f} | {c['fraction_of_optimal']:.3f} | {c['erp_calls']:,} "
            f"| {c['throttled_429']} ({c['throttled_after_first']}) | {c['booked_twice']} | {c['not_booked']} |"
        )
    lines += ["", "## Targets", ""]
    for c in (c for c in data["cases"] if c["batched"]):
        base = next((b for b in data["cases"] if b["erp"] == c["erp"] and not b["batched"]), None)
        met = (
            c["fraction_of_optimal"] >= TARGET_FRACTION
            and c["throttled_after_first"] == 0
            and c["booked_twice"] == 0
            and c["not_booked"] == 0
        )
        speedup = (
            f"; {c['bills_per_quota_minute'] / base['bills_per_quota_minute']:.1f}× the one-call-per-record baseline"
            if base and base["bills_per_quota_minute"]
            else ""
        )
        lines.append(
            f"* {c['erp']}: {c['fraction_of_optimal']:.3f} of optimal (target ≥ {TARGET_FRACTION}), "
            f"{c['throttled_after_first']} 429s after the first, {c['booked_twice']} booked twice, "
            f"{c['not_booked']} not booked{speedup} — **{'met' if met else 'missed'}**"
        )
    if data.get("cpu"):
        lines += [
            "",
            "## Connector CPU per bill",
            "",
            "The connector runtime's own CPU time per bill (the sandbox in its own process, limits lifted; "
            "results published to a list, not a broker):",
            "",
            "| ERP | writes | bills | CPU ms per bill | requests |",
            "|---|---|---|---|---|",
        ]
        for row in data["cpu"]:
            requests = row["batch_requests"] if row["batched"] else row["bills"]
            lines.append(
                f"| {row['erp']} | {'batch' if row['batched'] else 'one per record'} | {row['bills']:,} "
                f"| {row['cpu_ms_per_bill']:.2f} | {requests:,} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run, print the report and write ``<out>/quota.md`` and ``quota.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.quota", description=__doc__.splitlines()[0])
    parser.add_argument("--bills", type=int, default=5000, help="backlog per ERP (default 5,000)")
    parser.add_argument("--xero-baseline-bills", type=int, default=150, help="one-call-per-record run, Xero")
    parser.add_argument("--qbo-baseline-bills", type=int, default=600, help="one-call-per-record run, QuickBooks")
    parser.add_argument("--xero-scale", type=float, default=2.0, help="quota seconds per real second, Xero")
    parser.add_argument("--qbo-scale", type=float, default=2.0, help="quota seconds per real second, QuickBooks")
    parser.add_argument(
        "--consumer-batch", type=int, default=0, help="records per consumer batch (default: as the connector worker)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "reports", help="report directory"
    )
    parser.add_argument(
        "--cpu", type=int, default=0, metavar="BILLS", help="also measure the runtime's CPU per bill, batched or not"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    data = asyncio.run(run(args, log))
    markdown = render(data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quota.md").write_text(markdown, encoding="utf-8")
    (args.out / "quota.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
