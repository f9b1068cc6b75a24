"""``python -m bench.connections``: one connector fleet per ERP kind serving many connections.

What it starts, all on 127.0.0.1 (each its own OS process, so RSS is per process):

* the embedded broker; a Xero sandbox serving ``tenants/2`` organisations and a QuickBooks sandbox
  serving ``tenants/2`` realms (``python -m bench.connections --role sandbox``), both with the
  vendors' published per-organisation limits (Xero 60/min, 5 concurrent, 5,000/day; QuickBooks
  500/min, 10 concurrent);
* ``tenants`` stored connections (Fernet-encrypted, in PostgreSQL when it answers, else SQLite),
  one per tenant, even tenants on Xero, odd on QuickBooks, each with the vendor's default limits;
  the hot tenant (``t0000``, Xero) also has ``daily_limit`` 60;
* ``ledgerflow connector --erp xero`` and ``ledgerflow connector --erp quickbooks`` (the fleets),
  and, as the baseline, one dedicated worker ``ledgerflow connector --connection`` (the
  per-connection mode) for one more connection.

Phases: warm-up (one bill per tenant: every connector built, every vendor created), then
*quiet* (bills spread over every tenant at ``--rate`` per second for ``--seconds``), then *hot*
(the same plus the hot tenant at ``--hot-rate`` per second, far above its 60 calls a minute),
then a new connection added at run time (and, as its baseline, a new dedicated worker started).

Figures, each beside its baseline from the same run:

* canonical records fetched per record booked, per ERP kind (the fleets' committed offsets over
  the bookings of that kind) vs the per-connection mode (the dedicated worker's group fetches
  every record: times the connections of the kind);
* worker RSS (peak, per process) vs the dedicated worker's (per connection);
* p99 latency (``finished_at − ce_time``) of the quiet tenants while the hot one is throttled vs
  their p99 in the quiet phase;
* seconds from storing a new connection to its first booking vs starting a dedicated worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.e2e import (
    Cluster,
    Service,
    _state_url,
    _workdir,
    ensure_topics,
    machine_info,
    percentiles,
    wait_http,
    wait_port,
)

HOT = "t0000"
PARTITIONS = 6
NEW_FLEET = "tnew"
NEW_DEDICATED = "tded"


def _org(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _realm(i: int) -> str:
    return f"93414530{i:08d}"


def _erp(i: int) -> str:
    return "xero" if i % 2 == 0 else "quickbooks"


def sandbox_main(erp: str, orgs: int, port: int) -> None:
    """Child role: the ``erp`` sandbox serving ``orgs`` organisations (realms) on ``port``."""
    import uvicorn

    if erp == "xero":
        from ledgerflow.connectors.xero.sandbox import create_app as xero_app

        ids = [_org(i) for i in range(orgs)] + [_org(10**6), _org(10**6 + 1)]
        app = xero_app(tenant_ids=ids)
    else:
        from ledgerflow.connectors.quickbooks.sandbox import create_app as qbo_app

        app = qbo_app(realm_ids=[_realm(i) for i in range(orgs)], enforce_limits=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _bill(tenant: str, n: int) -> Any:
    from ledgerflow.contracts import Bill, LineItem, Reference, VendorRef

    amount = Decimal("100.00") + n % 500
    return Bill(
        canonical_id=f"{tenant}:mercoa:bill:in_{n}",
        tenant=tenant,
        source="mercoa",
        source_id=f"in_{n}",
        source_event="invoice.created",
        vendor=VendorRef(source_id=f"ent_{tenant}", name=f"Supplier of {tenant}"),
        bill_number=f"INV-{n}",
        bill_date=date(2026, 3, 2),
        due_date=date(2026, 4, 1),
        currency="USD",
        line_items=[LineItem(line_number=1, amount=amount, gl_account=Reference(accounting_id="600394"))],
        subtotal=amount,
        total=amount,
    )


class Driver:
    """Publishes canonical bills and watches the results topic."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        from ledgerflow.contracts.topics import Topics

        self.bootstrap = bootstrap
        self.topics = Topics(prefix)
        self.producer: Any = None
        self.booked: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.erp_of: dict[str, str] = {}
        self.outcomes: dict[str, int] = defaultdict(int)
        self.by_erp: dict[str, int] = defaultdict(int)
        self.n = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            self.topics.results, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest"
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def _watch(self) -> None:
        from ledgerflow.contracts import SyncResult

        async for msg in self.consumer:
            result = SyncResult.model_validate_json(msg.value or b"{}")
            self.outcomes[result.outcome.value] += 1
            if result.outcome.value == "succeeded" and result.canonical_id not in self.booked:
                self.booked[result.canonical_id] = time.monotonic()
                self.by_erp[result.erp] += 1
                if result.accepted_at is not None:
                    self.latency[result.canonical_id] = (result.finished_at - result.accepted_at).total_seconds()
                    self.erp_of[result.canonical_id] = result.erp

    async def send(self, tenant: str) -> str:
        from ledgerflow.contracts.events import EventAttributes

        self.n += 1
        bill = _bill(tenant, self.n)
        attrs = EventAttributes(
            id=str(uuid.uuid4()),
            source=f"/tenants/{tenant}/mercoa",
            type="io.ledgerflow.bill.v1",
            tenant=tenant,
            subject=bill.canonical_id,
            time=datetime.now(UTC),
        )
        await self.producer.send(
            self.topics.canonical("bill"),
            bill.model_dump_json().encode(),
            key=bill.canonical_id.encode(),
            headers=[(k, v.encode()) for k, v in attrs.to_headers().items()],
        )
        return str(bill.canonical_id)

    async def paced(
        self, tenants: list[str], rate: float, seconds: float, hot_rate: float = 0.0
    ) -> dict[str, list[str]]:
        """Send ``rate``/s bills to random ``tenants`` (and ``hot_rate``/s to the hot tenant) for ``seconds``."""
        sent: dict[str, list[str]] = {"quiet": [], "hot": []}
        start = time.monotonic()
        i = j = 0
        while (now := time.monotonic() - start) < seconds:
            while i < now * rate:
                sent["quiet"].append(await self.send(random.choice(tenants)))
                i += 1
            while j < now * hot_rate:
                sent["hot"].append(await self.send(HOT))
                j += 1
            await asyncio.sleep(0.01)
        await self.producer.flush()
        return sent

    async def wait_booked(self, ids: list[str], timeout: float) -> int:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(i not in self.booked for i in ids):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return sum(1 for i in ids if i in self.booked)


async def _fetched(bootstrap: str, group: str, topic: str) -> int:
    """Records consumer group ``group`` fetched and committed from ``topic`` (sum of its committed offsets)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


async def run(opts: argparse.Namespace, log: Any) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); return its figures."""
    from cryptography.fernet import Fernet

    from ledgerflow.connectors.fleet import fleet_group_id
    from ledgerflow.connectors.quickbooks.sandbox import DEFAULT_CREDENTIALS as QBO
    from ledgerflow.connectors.quickbooks.sandbox import sandbox_connection as qbo_connection
    from ledgerflow.connectors.runtime import group_id
    from ledgerflow.connectors.xero.sandbox import DEFAULT_CREDENTIALS as XERO
    from ledgerflow.connectors.xero.sandbox import sandbox_connection as xero_connection
    from ledgerflow.contracts.topics import Topics
    from ledgerflow.core.connections import ConnectionCipher, ConnectionStore
    from ledgerflow.core.embedded import free_port
    from ledgerflow.core.settings import ConnectionConfig, Settings
    from ledgerflow.core.state import StateStore

    tenants = [f"t{i:04d}" for i in range(opts.tenants)]
    prefix = f"bc{uuid.uuid4().hex[:6]}"
    key = Fernet.generate_key().decode()
    data: dict[str, Any] = {"machine": machine_info(), "options": vars(opts).copy()}
    with _workdir(opts.keep) as workdir:
        cluster = Cluster(workdir)
        state_url, drop = await _state_url(prefix, workdir)
        sampler = None
        try:
            cluster.broker.start()
            bootstrap = cluster.broker.bootstrap_servers
            topics = Topics(prefix)
            await ensure_topics(bootstrap, topics.all(), partitions=PARTITIONS)
            urls = {}
            for erp in ("xero", "quickbooks"):
                port = free_port()
                cluster.spawn(
                    f"sandbox-{erp}",
                    [sys.executable, "-m", "bench.connections", "--role", "sandbox", "--erp", erp,
                     "--orgs", str(opts.tenants), "--port", str(port)],
                )  # fmt: skip
                urls[erp] = f"http://127.0.0.1:{port}"
            settings = Settings(state_url=state_url, connections_key=key)
            state = StateStore.from_settings(settings)
            await state.create_all()
            store = ConnectionStore(state, ConnectionCipher.from_settings(settings))
            for url in urls.values():
                await wait_port(int(url.rsplit(":", 1)[1]), 60, cluster)

            def config(i: int, erp: str, **options: Any) -> ConnectionConfig:
                base = ConnectionConfig(erp=erp, objects=["bill"], options={"timeout_seconds": 30, **options})
                if erp == "xero":
                    return xero_connection(base, urls[erp], replace(XERO, tenant_id=_org(i)))
                return qbo_connection(base, urls[erp], replace(QBO, realm_id=_realm(i)))

            started = time.monotonic()
            for i, tenant in enumerate(tenants):
                # The hot connection books one bill per request (no batch writes), so its rate is its
                # call rate: far above Xero's 60 calls a minute and its daily_limit.
                extra = {"daily_limit": opts.hot_daily_limit, "max_batch": 1} if tenant == HOT else {}
                await store.add(f"{_erp(i)}-{tenant}", config(i, _erp(i), **extra), [tenant])
            dedicated_config = config(10**6 + 1, "xero", dedicated=True)
            await store.add(f"xero-{NEW_DEDICATED}", dedicated_config, [NEW_DEDICATED])
            took = time.monotonic() - started
            log(f"stored {len(tenants) + 1} connections in {took:.1f}s ({state_url.split(':')[0]})")
            routing = workdir / "routing.yaml"
            # The tenants (no sources: the bench publishes canonical records itself) and no connection:
            # every connection is stored, as a deployment with thousands of them keeps them.
            every = [*tenants, NEW_FLEET, NEW_DEDICATED]
            routing.write_text(json.dumps({"tenants": {t: {} for t in every}, "connections": {}}), encoding="utf-8")
            env = {
                "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "LEDGERFLOW_KAFKA_ENABLE_IDEMPOTENCE": "false",
                "LEDGERFLOW_TOPIC_PREFIX": prefix,
                "LEDGERFLOW_ROUTING_FILE": str(routing),
                "LEDGERFLOW_STATE_URL": state_url,
                "LEDGERFLOW_CONNECTIONS_KEY": key,
                "LEDGERFLOW_LOG_LEVEL": "WARNING",
            }
            fleets: dict[str, Service] = {}
            for erp in ("xero", "quickbooks"):
                fleets[erp] = cluster.spawn(
                    f"fleet-{erp}", [sys.executable, "-m", "ledgerflow", "connector", "--erp", erp], env, metrics=True
                )
            for service in fleets.values():
                assert service.metrics_url is not None
                await wait_http(f"{service.metrics_url}/readyz", 90, cluster)
            sampler = asyncio.create_task(cluster.sampler())
            driver = Driver(bootstrap, prefix)
            await driver.start()
            try:
                # Warm-up: one bill per tenant (every connector built, every vendor created).
                started = time.monotonic()
                warm = [await driver.send(t) for t in tenants]
                await driver.producer.flush()
                done = await driver.wait_booked(warm, opts.drain * 3)
                warm_s = time.monotonic() - started
                log(f"warm-up: {done}/{len(warm)} booked in {warm_s:.1f}s")
                data["warmup"] = {"records": len(warm), "booked": done, "seconds": round(warm_s, 1)}

                quiet_tenants = [t for t in tenants if t != HOT]
                phases: dict[str, Any] = {}
                for phase, hot_rate in (("quiet", 0.0), ("hot", opts.hot_rate)):
                    sent = await driver.paced(quiet_tenants, opts.rate, opts.seconds, hot_rate)
                    booked = await driver.wait_booked(sent["quiet"], opts.drain)
                    lat = [driver.latency[i] * 1000 for i in sent["quiet"] if i in driver.latency]
                    hot_booked = sum(1 for i in sent["hot"] if i in driver.booked)
                    by_erp = {
                        erp: percentiles(
                            [driver.latency[i] * 1000 for i in sent["quiet"] if driver.erp_of.get(i) == erp]
                        )
                        for erp in ("xero", "quickbooks")
                    }
                    phases[phase] = {
                        "quiet_latency_ms_by_erp": by_erp,
                        "quiet_sent": len(sent["quiet"]),
                        "quiet_booked": booked,
                        "quiet_latency_ms": percentiles(lat),
                        "hot_sent": len(sent["hot"]),
                        "hot_booked_by_then": hot_booked,
                    }
                    p99 = phases[phase]["quiet_latency_ms"]["p99"]
                    log(f"{phase}: {booked}/{len(sent['quiet'])} quiet booked, p99 {p99} ms; hot {hot_booked} booked")
                data["phases"] = phases

                # A connection added at run time: stored, then bills for its tenant every 0.25 s.
                async def first_booking(tenant: str, start: float) -> float | None:
                    ids: list[str] = []
                    while time.monotonic() - start < 60:
                        ids.append(await driver.send(tenant))
                        await driver.producer.flush()
                        await asyncio.sleep(0.25)
                        booked_at = [driver.booked[i] for i in ids if i in driver.booked]
                        if booked_at:
                            return min(booked_at) - start
                    return None

                start = time.monotonic()
                await store.add(f"xero-{NEW_FLEET}", config(10**6, "xero"), [NEW_FLEET])
                fleet_new = await first_booking(NEW_FLEET, start)
                start = time.monotonic()
                args = [sys.executable, "-m", "ledgerflow", "connector", "--connection", f"xero-{NEW_DEDICATED}"]
                dedicated = cluster.spawn("dedicated-xero", args, env, metrics=True)
                dedicated_new = await first_booking(NEW_DEDICATED, start)
                data["new_connection_s"] = {"fleet": fleet_new, "dedicated_worker": dedicated_new}
                log(f"new connection: fleet {fleet_new}s, new dedicated worker {dedicated_new}s")
                await asyncio.sleep(1.0)
                for service in cluster.services:
                    service.sample()

                canonical = topics.canonical("bill")
                fetched = {erp: await _fetched(bootstrap, fleet_group_id(erp, topics), canonical) for erp in fleets}
                dedicated_fetched = await _fetched(bootstrap, group_id(f"xero-{NEW_DEDICATED}", topics), canonical)
                total = driver.n
                data["fetched"] = {
                    "published": total,
                    "booked": dict(driver.by_erp),
                    "fleet_group_fetched": fetched,
                    "dedicated_group_fetched": dedicated_fetched,
                    "connections": {erp: sum(1 for i in range(opts.tenants) if _erp(i) == erp) for erp in fleets},
                }
                data["rss_mib"] = {
                    **{f"fleet-{erp}": round(s.peak_rss / 2**20, 1) for erp, s in fleets.items()},
                    "dedicated-worker": round(dedicated.peak_rss / 2**20, 1),
                }
                data["cpu_s"] = {s.name: round(s.cpu_seconds(), 1) for s in cluster.services}
                data["outcomes"] = dict(driver.outcomes)
                data["deferred"] = await _deferred(fleets["xero"])
            finally:
                await driver.stop()
                await state.close()
        finally:
            if sampler is not None:
                sampler.cancel()
            cluster.stop_all()
            with contextlib.suppress(Exception):
                await drop()
    return data


async def _deferred(service: Service) -> dict[str, float]:
    """``ledgerflow_connection_deferred_total`` of the hot connection by reason (from the fleet's /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with httpx.AsyncClient(timeout=30.0) as client:
            text = (await client.get(f"{service.metrics_url}/metrics")).text
    except httpx.HTTPError as exc:
        return {"unavailable": str(exc) or type(exc).__name__}  # type: ignore[dict-item]
    out: dict[str, float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        if fam.name in ("ledgerflow_connection_deferred", "ledgerflow_connection_throttled"):
            for sample in fam.samples:
                if sample.name.endswith("_total") and sample.labels.get("connection") == f"xero-{HOT}":
                    out[f"{fam.name.rsplit('_', 1)[1]}:{sample.labels['reason']}"] += sample.value
    return dict(out)


def render(data: dict[str, Any]) -> str:
    """The figures as Markdown, each beside its baseline and as a ratio."""
    m = data["machine"]
    lines = [
        "# ledgerflow connections benchmark (`python -m bench.connections`)",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('logical_cores')} cores, Python {m.get('python')}, load average "
        f"at start {m.get('load_average_at_start')} (other work on the machine skews every figure). "
        f"Tenants: {data['options']['tenants']} (one connection each, half Xero, half QuickBooks).",
        "",
        "| figure | fleet | baseline | ratio | target |",
        "|---|---|---|---|---|",
    ]
    f = data["fetched"]
    for erp, fetched in f["fleet_group_fetched"].items():
        # Every canonical record is fetched by every group reading the canonical topics; the fleet
        # of a kind is one group, the per-connection mode one group per connection of the kind.
        published = f["published"]
        per = fetched / published if published else float("nan")
        conns = f["connections"][erp]
        dedicated = f["dedicated_group_fetched"] / published if published else float("nan")
        base = dedicated * conns
        lines.append(
            f"| canonical records fetched per record published, {erp} ({f['booked'].get(erp, 0)} booked) | "
            f"{per:.2f} | {base:.0f} (per-connection mode: one dedicated group measured at {dedicated:.2f}, "
            f"× {conns} connections) | {per / base:.4f} | 1 per ERP kind |"
        )
    rss = data["rss_mib"]
    for erp in ("xero", "quickbooks"):
        conns = f["connections"][erp]
        base = rss["dedicated-worker"] * conns
        lines.append(
            f"| worker RSS, {erp} fleet ({conns} connections) | {rss[f'fleet-{erp}']} MiB | "
            f"{rss['dedicated-worker']} MiB × {conns} = {base:.0f} MiB | {rss[f'fleet-{erp}'] / base:.4f} | "
            "≤ 150 MiB per process |"
        )
    quiet = data["phases"]["quiet"]["quiet_latency_ms"]["p99"]
    hot = data["phases"]["hot"]["quiet_latency_ms"]["p99"]
    if quiet and hot:
        lines.append(
            f"| p99 latency of the quiet tenants, hot tenant throttled | {hot} ms | {quiet} ms (no hot tenant) | "
            f"{hot / quiet:.2f} | ≤ 2 |"
        )
    new = data["new_connection_s"]
    if new["fleet"] is not None and new["dedicated_worker"] is not None:
        lines.append(
            f"| new connection → first booking | {new['fleet']:.1f} s | {new['dedicated_worker']:.1f} s (new "
            f"dedicated worker process) | {new['fleet'] / new['dedicated_worker']:.2f} | < 10 s |"
        )
    lines += [
        "",
        "```json",
        json.dumps({k: v for k, v in data.items() if k != "machine"}, indent=1, default=str),
        "```",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``; run the benchmark (or a child role); print the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.connections", description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bench", "sandbox"], default="bench")
    parser.add_argument("--erp", default="xero")
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tenants", type=int, default=1000, help="tenants, one connection each (default 1000)")
    parser.add_argument("--rate", type=float, default=15.0, help="bills per second spread over the tenants")
    parser.add_argument("--hot-rate", type=float, default=10.0, help="bills per second of the hot tenant")
    parser.add_argument("--hot-daily-limit", type=int, default=60, help="the hot connection's daily_limit")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of each phase")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for a phase's bookings")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (service logs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reports")
    args = parser.parse_args(argv)
    if args.role == "sandbox":
        sandbox_main(args.erp, args.orgs, args.port)
        return 0

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    data = asyncio.run(run(args, log))
    text = render(data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "connections.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
