"""End-to-end benchmark of ledgerflow as separate OS processes, each figure beside a baseline.

What runs (every address is loopback, every phase has a deadline):

* the embedded Tansu broker (``ledgerflow.core.embedded.EmbeddedBroker``);
* two ERP sandboxes, ``ledgerflow sandbox ERP --port N`` (QuickBooks + Xero when the Xero connector
  and sandbox import, else two QuickBooks sandboxes);
* ``ledgerflow ingress``, ``ledgerflow transformer`` and ``ledgerflow connector --connection X``
  (one per ERP connection), configured only through ``LEDGERFLOW_*`` variables and a routing YAML
  with explicit ``base_url`` and sandbox credentials (incl. ``token_url``); the connections'
  ``rate_limit_per_minute`` / ``max_concurrency`` options are raised for the benchmark;
* this process: the HTTP load generator (keep-alive HTTP/1.1 over asyncio streams), a results watcher (aiokafka, reads
  ``<prefix>.results.v1``) and a sampler of every service's RSS and CPU time (psutil).

Phases (:func:`run`):

1. **ingress** — ``ledgerflow ingress`` alone, then the baseline ingress (:func:`baseline_ingress_app`:
   a bare ASGI app that writes the body to Kafka with ``acks=all`` and answers 202, no checks), each
   at saturation (closed loop) and at a fixed rate, with the Mercoa sample (minified) and a small
   INGENIOUS vendor invoice;
2. **transformer through the broker** — :mod:`bench.transformer`: ``ledgerflow transformer`` and
   a naive aiokafka worker (``json.loads`` + a dict copy of the mapped fields), each fed 10,000
   raw Mercoa invoices and then 10,000 INGENIOUS vendor invoices preloaded faster than it
   consumes; outputs per second and per CPU-second of the worker;
3. **naive baseline** — :func:`naive_pipeline` in its own process: one aiokafka consumer that
   ``json.loads`` each raw event and posts a bill synchronously to each QuickBooks sandbox, no
   binder, no retries, no results topic;
4. **end to end** — the ledgerflow pipeline at 100 events/s, at saturation and at the measured
   sustained rate; latency = ``SyncResult.finished_at − accepted_at`` (``accepted_at`` is the
   ingress's ``ce_time``), also against the result's Kafka timestamp;
5. **scaling** — a second transformer and a second replica of the first connector join their
   consumer groups; the saturation run is repeated; then the 1,000 events/s run, last and on
   this scaled-out pipeline, because far above capacity it leaves a backlog behind its drain
   timeout that would skew any run after it.

Also: the transformer micro-benchmark (:func:`transformer_microbench`): the Mercoa mapper against
``json.loads`` plus a dict copy of the same fields, in this process.

``python -m bench.e2e --role naive|baseline-ingress`` runs the child roles (used internally).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import yaml

from ledgerflow.core.embedded import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
LEDGERFLOW = str(Path(sys.executable).with_name("ledgerflow"))
TENANT = "bench"
MERCOA_TOKEN = "bench-mercoa-token"
INGENIOUS_AUTH = "Bearer bench-ingenious-token"
PLACEHOLDER = "BENCHID0000000000000000000000"
"""Stands for the per-event record id inside the payload templates (replaced per request)."""


# --------------------------------------------------------------------------------------------
# Machine, statistics


def machine_info() -> dict[str, Any]:
    """CPU model, logical/physical cores, RAM (GiB), Python version, OS, load average at start."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """``count``, ``p50``, ``p99``, ``p999``, ``max``, ``mean`` of ``values`` (nearest rank; None when empty)."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "p999": None, "max": None, "mean": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))], 2)

    return {
        "count": n,
        "p50": rank(0.50),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / n, 2),
    }


# --------------------------------------------------------------------------------------------
# Payloads


def mercoa_template() -> tuple[bytes, str]:
    """The Mercoa ``invoice.created`` sample minified, with ``invoice.id`` = :data:`PLACEHOLDER`.

    Returns (template, origin): origin is the sample's path, or ``generated`` when ``../shared`` is
    absent (then the demo's fallback invoice padded with line items to about the sample's size).
    """
    path = SHARED / "samples" / "mercoa" / "invoice.created.json"
    if path.is_file():
        payload = orjson.loads(path.read_bytes())
        origin = str(path.relative_to(ROOT.parent))
    else:
        from ledgerflow.app.demo import FALLBACK_INVOICE

        payload = orjson.loads(orjson.dumps(FALLBACK_INVOICE))
        lines = payload["invoice"]["lineItems"]
        while len(orjson.dumps(payload)) < 10_100:
            extra = dict(lines[-1], id=f"inli_pad-{len(lines)}", amount=0, unitPrice=0)
            lines.append(extra)
        origin = "generated"
    payload["invoice"]["id"] = PLACEHOLDER
    return orjson.dumps(payload), origin


def ingenious_template() -> bytes:
    """A small INGENIOUS.BUILD vendor invoice (``tests/golden/ingenious/vendor_invoice.input.json``'s payload)."""
    source = orjson.loads((ROOT / "tests" / "golden" / "ingenious" / "vendor_invoice.input.json").read_bytes())
    payload = source["payload"]
    payload["data"]["id"] = PLACEHOLDER
    return orjson.dumps(payload)


@dataclass(frozen=True)
class Workload:
    """One kind of webhook: where it goes, its headers, and a body per record id."""

    name: str
    path: str
    headers: dict[str, str]
    template: bytes

    def body(self, record_id: str) -> bytes:
        """The template with the record id in place (same length for a same-length id)."""
        return self.template.replace(PLACEHOLDER.encode(), record_id.encode())


def workloads() -> tuple[Workload, Workload, str]:
    """(Mercoa invoice, INGENIOUS vendor invoice, origin of the Mercoa payload)."""
    mercoa, origin = mercoa_template()
    json_ct = {"content-type": "application/json"}
    return (
        Workload(
            "mercoa", f"/webhooks/{TENANT}/mercoa", {**json_ct, "authorization": f"Bearer {MERCOA_TOKEN}"}, mercoa
        ),
        Workload(
            "ingenious",
            f"/webhooks/{TENANT}/ingenious/vendor_invoice",
            {**json_ct, "authorization": INGENIOUS_AUTH},
            ingenious_template(),
        ),
        origin,
    )


def record_id(tag: str, i: int) -> str:
    """Record id of event ``i`` of run ``tag``: ``in_<tag>-<i>`` (distinct invoice ids per event)."""
    return f"in_{tag}-{i:07d}"


# --------------------------------------------------------------------------------------------
# Load generation


@dataclass
class LoadResult:
    """What the generator saw: requests sent, 202s, failures, latencies (ms), wall span (s)."""

    mode: str
    target_rate: float | None
    concurrency: int | None
    sent: int = 0
    accepted: int = 0
    failed: int = 0
    not_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: accepted/s over the span and the latency percentiles."""
        return {
            "mode": self.mode,
            "target_rate": self.target_rate,
            "concurrency": self.concurrency,
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "not_sent_generator_saturated": self.not_sent,
            "seconds": round(self.seconds, 2),
            "accepted_per_s": round(self.accepted / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": percentiles(self.latencies_ms),
        }


async def fixed_rate(
    base_url: str, load: Workload, tag: str, rate: float, seconds: float, *, connections: int = 64
) -> LoadResult:
    """Open-loop load: event ``i`` is due at ``t0 + i / rate``; latency counts from when it was due.

    ``connections`` keep-alive HTTP/1.1 connections (requests built with
    :func:`bench.common.build_request`) each send the next due event as soon as they are free, so
    a server that falls behind sees a queue, not a storm of new connections, and its queueing
    shows in the latency (no coordinated omission). Events still unsent 30 s after the last was
    due are counted in ``not_sent``.
    """
    from bench.common import ACCEPTED, build_request, read_response

    out = LoadResult("fixed-rate", rate, None)
    total = max(1, int(rate * seconds))
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    next_index = iter(range(total))
    t0 = time.perf_counter()
    give_up = t0 + seconds + 30.0

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in next_index:
                due = t0 + i / rate
                now = time.perf_counter()
                if now > give_up:
                    out.not_sent += 1
                    continue
                if due > now:
                    await asyncio.sleep(due - now)
                body = load.body(record_id(tag, i))
                writer.write(build_request("POST", load.path, f"{host}:{port}", load.headers, body))
                out.sent += 1
                status, _ = await read_response(reader)
                if status in ACCEPTED:
                    out.accepted += 1
                    out.latencies_ms.append((time.perf_counter() - due) * 1000)
                else:
                    out.failed += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out.failed += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(min(connections, total))))
    out.seconds = time.perf_counter() - t0
    return out


async def saturate(base_url: str, load: Workload, tag: str, concurrency: int, seconds: float) -> LoadResult:
    """Closed-loop load: ``concurrency`` keep-alive connections each post the next event (a new record id)
    as soon as the last is answered, for ``seconds``."""
    from bench.common import ACCEPTED, build_request, read_response

    out = LoadResult("saturation", None, concurrency)
    counter = iter(range(10**9))
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    t0 = time.perf_counter()
    stop_at = t0 + seconds

    async def sender() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (started := time.perf_counter()) < stop_at:
                body = load.body(record_id(tag, next(counter)))
                writer.write(build_request("POST", load.path, f"{host}:{port}", load.headers, body))
                out.sent += 1
                if (await read_response(reader))[0] in ACCEPTED:
                    out.accepted += 1
                    out.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    out.failed += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out.failed += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    out.seconds = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------
# Services as OS processes


@dataclass
class Service:
    """One child process with its peak RSS (bytes) and CPU seconds (user + system)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str | None = None
    peak_rss: int = 0

    @property
    def ps(self) -> psutil.Process:
        """psutil handle of the process."""
        return psutil.Process(self.proc.pid)

    def sample(self) -> None:
        """Update the peak RSS."""
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds so far (0 once gone)."""
        with contextlib.suppress(psutil.Error):
            times = self.ps.cpu_times()
            return float(times.user + times.system)
        return 0.0

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Starts and watches the child processes of one benchmark (broker, sandboxes, services)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.services: list[Service] = []
        self.retired: list[Service] = []
        self.broker = EmbeddedBroker(log_path=workdir / "broker.log")

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, *, metrics: bool = False) -> Service:
        """Start ``args`` with the ``LEDGERFLOW_*`` variables in ``env``; log to ``<workdir>/<name>.log``."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERFLOW_")}
        # `python -m bench.…` roles run from the work directory: the checkout (where `bench` lives;
        # the installed package is `ledgerflow` only) goes on their path.
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
        full_env.update(env or {})
        metrics_url = None
        if metrics:
            port = free_port()
            full_env["LEDGERFLOW_METRICS_PORT"] = str(port)
            metrics_url = f"http://127.0.0.1:{port}"
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        service = Service(name, proc, log_path, metrics_url)
        self.services.append(service)
        return service

    def retire(self, service: Service) -> None:
        """Stop ``service`` and keep its figures (peak RSS) for the report."""
        service.stop()
        self.services.remove(service)
        self.retired.append(service)

    def check_alive(self) -> None:
        """Raise if a child died (with the tail of its log)."""
        for service in self.services:
            if service.proc.poll() is not None:
                tail = service.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{tail}")

    async def sampler(self) -> None:
        """Sample every service's RSS every 0.2 s until cancelled."""
        while True:
            for service in self.services:
                service.sample()
            await asyncio.sleep(0.2)

    def stop_all(self) -> None:
        """Stop every service (reverse start order) and the broker."""
        for service in reversed(self.services):
            service.stop()
            self.retired.append(service)
        self.services.clear()
        self.broker.stop()


async def wait_http(url: str, timeout: float, cluster: Cluster) -> None:  # noqa: ASYNC109
    """Wait until ``GET url`` answers 200 (children checked for early death)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            cluster.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {timeout:g}s")


async def wait_port(port: int, timeout: float, cluster: Cluster) -> None:  # noqa: ASYNC109
    """Wait until ``127.0.0.1:port`` accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"port {port} not open within {timeout:g}s")


async def counter_total(url: str, family: str) -> float:
    """Sum of every sample of the counter ``family`` (e.g. ``ledgerflow_transform_events``) at ``url``/metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(f"{url}/metrics")).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == family
        for s in fam.samples
        if s.name.endswith("_total")
    )


# --------------------------------------------------------------------------------------------
# Results watcher


@dataclass
class Outcome:
    """One SyncResult seen: latencies (ms) from acceptance to ``finished_at`` and to the Kafka timestamp."""

    connection: str
    outcome: str
    finished_ms: float
    kafka_ms: float
    kafka_ts: float


class ResultsWatcher:
    """Reads ``<prefix>.results.v1`` from its end, keeping results whose canonical id carries a run tag."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.seen: dict[str, list[Outcome]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition at its end and start reading in the background."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        parts = consumer.partitions_for_topic(self.topic) or set()
        if not parts:
            await consumer.stop()
            raise RuntimeError(f"topic {self.topic} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: Any) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batches.values():
                    for record in records:
                        self._keep(record)
        finally:
            await consumer.stop()

    def _keep(self, record: Any) -> None:
        result = orjson.loads(record.value)
        accepted = result.get("accepted_at")
        if not accepted:
            return
        accepted_ts = datetime.fromisoformat(accepted).timestamp()
        finished_ts = datetime.fromisoformat(result["finished_at"]).timestamp()
        kafka_ts = record.timestamp / 1000
        self.seen.setdefault(result["canonical_id"], []).append(
            Outcome(
                result["connection"],
                result["outcome"],
                (finished_ts - accepted_ts) * 1000,
                (kafka_ts - accepted_ts) * 1000,
                kafka_ts,
            )
        )

    def for_tag(self, tag: str) -> list[Outcome]:
        """Results of run ``tag`` (canonical ids ``…:in_<tag>-…``), first result per (record, connection)."""
        marker = f":in_{tag}-"
        out: list[Outcome] = []
        for canonical_id, outcomes in self.seen.items():
            if marker in canonical_id:
                firsts: dict[str, Outcome] = {}
                for o in outcomes:
                    firsts.setdefault(o.connection, o)
                out.extend(firsts.values())
        return out

    async def wait_for(self, tag: str, expected: int, timeout: float) -> list[Outcome]:  # noqa: ASYNC109
        """Wait until ``expected`` results of ``tag`` arrived or ``timeout`` passed; return what arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.for_tag(tag)) < expected:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.2)
        return self.for_tag(tag)

    async def stop(self) -> None:
        """Stop reading."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --------------------------------------------------------------------------------------------
# Child roles: baseline ingress and naive pipeline


def sandbox_app(erp: str) -> Any:
    """The ERP sandbox app of ``erp`` with its own rate limits lifted where it has any (Xero: 60/min, 5 at once).

    ``ledgerflow sandbox ERP`` serves the sandboxes with the vendors' published limits, which cap a
    Xero connection at one call per second; the benchmark measures ledgerflow, not Xero's quota.
    """
    import inspect

    from ledgerflow.connectors.registry import sandbox_module

    create_app = sandbox_module(erp).create_app
    params = inspect.signature(create_app).parameters
    lifted = {
        k: v for k, v in {"minute_limit": 10**9, "concurrent_limit": 10**6, "day_limit": 10**9}.items() if k in params
    }
    return create_app(**lifted)


async def naive_pipeline(bootstrap: str, topic: str, sandboxes: list[str], out_path: Path, deadline: float) -> None:
    """The end-to-end baseline: one aiokafka consumer, ``json.loads``, one synchronous bill POST per sandbox.

    ``sandboxes`` are QuickBooks sandbox base URLs (refresh-token grant with the sandbox's
    credentials, one vendor created up front, then ``POST /v3/company/<realm>/bill`` per event and
    sandbox, one request at a time). The consumer is assigned every partition of ``topic`` at its
    end (no group), then ``<out_path>.ready`` is created. Each event appends a JSON line
    ``[invoice id, latency ms, epoch seconds]`` to ``out_path``; latency is from the raw event's
    ``ce_time`` to the last POST answered. Runs until SIGTERM or ``deadline`` (epoch seconds).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ledgerflow.connectors.quickbooks.sandbox import DEFAULT_CREDENTIALS as QBO
    from ledgerflow.connectors.quickbooks.sandbox import TOKEN_PATH

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with httpx.AsyncClient(timeout=30.0) as http:
        targets = []
        for base in sandboxes:
            token = (
                await http.post(
                    base + TOKEN_PATH,
                    data={"grant_type": "refresh_token", "refresh_token": QBO.refresh_token},
                    auth=(QBO.client_id, QBO.client_secret),
                )
            ).json()["access_token"]
            headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
            company = f"{base}/v3/company/{QBO.realm_id}"
            vendor = await http.post(
                f"{company}/vendor", json={"DisplayName": f"Naive {uuid.uuid4().hex[:8]}"}, headers=headers
            )
            vendor.raise_for_status()
            targets.append((company, headers, vendor.json()["Vendor"]["Id"]))
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        Path(f"{out_path}.ready").touch()  # noqa: ASYNC240 - an empty marker file
        try:
            with out_path.open("a", encoding="utf-8") as out:
                while not stop.is_set() and time.time() < deadline:
                    batches = await consumer.getmany(timeout_ms=200, max_records=100)
                    for records in batches.values():
                        for record in records:
                            event = json.loads(record.value)
                            invoice = event["invoice"]
                            lines = [
                                {
                                    "Amount": line["amount"],
                                    "DetailType": "AccountBasedExpenseLineDetail",
                                    "AccountBasedExpenseLineDetail": {
                                        "AccountRef": {"value": line.get("glAccountId") or "7"}
                                    },
                                }
                                for line in invoice["lineItems"]
                            ]
                            for company, headers, vendor_id in targets:
                                bill = {
                                    "VendorRef": {"value": vendor_id},
                                    "Line": lines,
                                    "DocNumber": invoice["id"][-21:],
                                }
                                (await http.post(f"{company}/bill", json=bill, headers=headers)).raise_for_status()
                            ce_time = dict(record.headers).get("ce_time")
                            now = time.time()
                            accepted = datetime.fromisoformat(ce_time.decode()).timestamp() if ce_time else now
                            out.write(json.dumps([invoice["id"], (now - accepted) * 1000, now]) + "\n")
                            out.flush()
        finally:
            await consumer.stop()


def child_main(argv: list[str]) -> None:
    """Entry point of the child roles (``--role sandbox`` or ``--role naive``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument("--role", choices=["sandbox", "naive"], required=True)
    parser.add_argument("--erp", default="quickbooks")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sandbox", action="append", default=[])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.role == "sandbox":
        import uvicorn

        uvicorn.run(sandbox_app(args.erp), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    else:
        asyncio.run(naive_pipeline(args.bootstrap, args.topic, args.sandbox, args.out, time.time() + args.seconds))


# --------------------------------------------------------------------------------------------
# Transformer micro-benchmark


def transformer_microbench(template: bytes, seconds: float) -> dict[str, Any]:
    """Events/s of the Mercoa route + mapper vs ``json.loads`` + a dict copy of the fields it reads (one core).

    Both sides start from the raw body bytes. ledgerflow's side is what the transformer worker
    does per record minus Kafka: ``orjson.loads``, the router, the mapper (pydantic validation of
    the canonical ``Bill``) and ``model_dump_json`` of the output.
    """
    from bench.transformer import baseline_copy
    from ledgerflow.contracts.events import EventAttributes
    from ledgerflow.transformers.base import RawEvent
    from ledgerflow.transformers.registry import ROUTERS

    body = template.replace(PLACEHOLDER.encode(), b"in_microbench-0000001")
    attrs = EventAttributes(
        id="e1", source=f"/tenants/{TENANT}/mercoa", type="io.ledgerflow.raw.mercoa.invoice.created", tenant=TENANT
    )
    router = ROUTERS["mercoa"]

    def ledgerflow_once() -> None:
        payload = orjson.loads(body)
        event = RawEvent(TENANT, "mercoa", payload["eventType"], payload, body, attrs)
        for record in router(event).mapper(event):
            record.model_dump_json()

    def baseline_once() -> None:
        baseline_copy(body)

    def rate(fn: Callable[[], None]) -> float:
        fn()
        n = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for _ in range(20):
                fn()
            n += 20
        return n / elapsed

    return {
        "ledgerflow_events_per_s": round(rate(ledgerflow_once), 1),
        "baseline_events_per_s": round(rate(baseline_once), 1),
        "body_bytes": len(body),
    }


# --------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class Options:
    """Knobs of one run (``--smoke`` picks tiny ones)."""

    smoke: bool = False
    seconds: float = 10.0
    ingress_seconds: float = 5.0
    rates: tuple[float, ...] = (100.0, 1000.0)
    ingress_rate: float = 300.0
    concurrency: int = 32
    drain_timeout: float = 60.0
    connector_concurrency: int = 32
    micro_seconds: float = 2.0
    transformer_events: int = 10_000
    warmup: float = 0.5
    keep: bool = False

    @classmethod
    def smoke_options(cls) -> Options:
        """A few seconds in all: tiny rates, short runs, short drains."""
        return cls(
            smoke=True,
            seconds=1.5,
            ingress_seconds=0.5,
            rates=(5.0, 20.0),
            ingress_rate=20.0,
            concurrency=4,
            drain_timeout=30.0,
            connector_concurrency=8,
            micro_seconds=0.2,
            transformer_events=200,
            warmup=0.1,
        )


def _erp_pair() -> tuple[str, str]:
    """(erp A, erp B): QuickBooks + Xero when Xero's connector and sandbox import, else two QuickBooks."""
    from ledgerflow.connectors.registry import connector_class, sandbox_module

    try:
        connector_class("xero")
        if hasattr(sandbox_module("xero"), "sandbox_connection"):
            return "quickbooks", "xero"
    except (ImportError, AttributeError, TypeError):
        pass
    return "quickbooks", "quickbooks"


async def _state_url(tag: str, workdir: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 when it answers (shared by replicas), else SQLite."""
    try:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        admin = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432, database="postgres", timeout=2)
    except (OSError, ImportError, Exception):
        return f"sqlite+aiosqlite:///{workdir / 'state.db'}", _nothing
    name = f"ledgerflow_bench_{tag}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432, database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", drop


async def _nothing() -> None:
    return None


def _routing(sandboxes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Routing YAML content: tenant ``bench`` (Mercoa token, INGENIOUS header) → every sandbox connection."""
    from ledgerflow.connectors.registry import sandbox_module
    from ledgerflow.core.settings import ConnectionConfig

    connections = {}
    for name, (erp, url) in sandboxes.items():
        wired = sandbox_module(erp).sandbox_connection(ConnectionConfig(erp=erp, objects=["bill", "vendor"]), url)
        config = wired.model_dump(mode="json")
        config["credentials"] = {k: v.get_secret_value() for k, v in wired.credentials.items()}
        config["options"] = {**config.get("options", {}), "rate_limit_per_minute": 6_000_000, "max_concurrency": 64}
        if erp == "quickbooks":  # Intuit's 40 batch requests per minute, lifted like the rest
            config["options"]["batch_rate_limit_per_minute"] = 6_000_000
        connections[name] = config
    return {
        "tenants": {
            TENANT: {
                "sources": {
                    "mercoa": {"tokens": [MERCOA_TOKEN]},
                    "ingenious": {"tokens": [INGENIOUS_AUTH], "header": "Authorization"},
                },
                "connections": list(sandboxes),
            }
        },
        "connections": connections,
    }


async def ensure_topics(bootstrap: str, names: list[str], *, partitions: int) -> None:
    """Create the missing topics (:func:`ledgerflow.core.kafka.ensure_topics`)."""
    from ledgerflow.core.kafka import ensure_topics as create

    await create(bootstrap, names, partitions=partitions)


def _env(cluster: Cluster, prefix: str, routing_file: Path, state_url: str) -> dict[str, str]:
    return {
        "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": cluster.broker.bootstrap_servers,
        "LEDGERFLOW_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "LEDGERFLOW_TOPIC_PREFIX": prefix,
        "LEDGERFLOW_ROUTING_FILE": str(routing_file),
        "LEDGERFLOW_STATE_URL": state_url,
        "LEDGERFLOW_INGRESS_HOST": "127.0.0.1",
        "LEDGERFLOW_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    """A temporary directory for logs, routing file and SQLite state; removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="ledgerflow-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


class Cpu:
    """CPU seconds of a set of services between :meth:`start` and :meth:`stop`."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services
        self.before = {s.name: s.cpu_seconds() for s in services}
        self.after: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        """CPU seconds used per service since construction."""
        self.after = {s.name: s.cpu_seconds() for s in self.services}
        return {name: round(self.after[name] - self.before[name], 3) for name in self.before}


def _per_1000(cpu: dict[str, float], events: int) -> dict[str, float | None]:
    return {name: (round(sec / events * 1000, 3) if events else None) for name, sec in cpu.items()}


async def _ingress_phase(
    cluster: Cluster,
    ingress: Service,
    url: str,
    env: dict[str, str],
    loads: tuple[Workload, ...],
    opts: Options,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Ledgerflow ingress (already running at ``url``) vs the baseline, each workload at saturation and fixed rate.

    Reuses :mod:`bench.ingress` and :mod:`bench.common`: the baseline is ``bench.ingress:baseline_app``
    (a bare ASGI app, one ``send_and_wait`` with ``acks=all`` per request, no checks) under uvicorn
    as ``bench.ingress`` runs it; saturation is :func:`bench.common.run_load` (closed loop, raw
    HTTP/1.1 keep-alive, its own process) over 512 distinct record ids; the fixed rate is
    :func:`fixed_rate` (open loop, distinct ids).
    """
    from bench import ingress as ingress_bench
    from bench.common import ACCEPTED, build_request, run_load

    bootstrap = env["LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS"]
    await ensure_topics(bootstrap, [f"{ingress_bench.PREFIX}.raw.mercoa"], partitions=6)
    base_port = free_port()
    baseline = cluster.spawn(
        "baseline-ingress",
        [sys.executable, "-m", "uvicorn", "--factory", "bench.ingress:baseline_app", "--host", "127.0.0.1",
         "--port", str(base_port), "--no-access-log", "--log-level", "warning", "--lifespan", "on"],
        {"PYTHONPATH": str(ROOT), "BENCH_BOOTSTRAP": bootstrap},
    )  # fmt: skip
    await wait_port(base_port, 60, cluster)
    out: dict[str, Any] = {}
    systems = (("ledgerflow", ingress, url), ("baseline", baseline, f"http://127.0.0.1:{base_port}"))
    for system, service, base_url in systems:
        port = int(base_url.rsplit(":", 1)[1])
        for load in loads:
            await saturate(base_url, load, f"warm{uuid.uuid4().hex[:4]}", 2, opts.warmup)  # connections, metadata
            for mode in ("saturation", "fixed-rate"):
                tag = uuid.uuid4().hex[:8]
                cpu = Cpu([service])
                if mode == "saturation":
                    host = f"127.0.0.1:{port}"
                    requests = [
                        build_request("POST", load.path, host, load.headers, load.body(record_id(tag, i)))
                        for i in range(512)
                    ]
                    raw = await asyncio.to_thread(
                        run_load, "127.0.0.1", port, requests, connections=opts.concurrency,
                        duration=opts.ingress_seconds, warmup=opts.warmup,
                    )  # fmt: skip
                    result = LoadResult("saturation", None, opts.concurrency)
                    result.accepted = sum(raw.statuses[s] for s in ACCEPTED)
                    result.sent = sum(raw.statuses.values())
                    result.failed = result.sent - result.accepted
                    result.latencies_ms = [x * 1000 for x in raw.latencies]
                    result.seconds = raw.seconds
                else:
                    result = await fixed_rate(base_url, load, tag, opts.ingress_rate, opts.ingress_seconds)
                used = cpu.stop()
                summary = result.summary()
                summary["cpu_s_per_1000"] = _per_1000(used, result.accepted)[service.name]
                out.setdefault(load.name, {}).setdefault(system, {})[mode] = summary
                log(
                    f"ingress {system} {load.name} {mode}: {summary['accepted_per_s']}/s "
                    f"p99 {summary['latency_ms']['p99']} ms"
                )
    out["peak_rss_mb"] = {
        "ledgerflow": round(ingress.peak_rss / 2**20, 1),
        "baseline": round(baseline.peak_rss / 2**20, 1),
    }
    cluster.retire(baseline)
    return out


def _naive_lines(path: Path) -> list[tuple[str, float, float]]:
    if not path.is_file():
        return []
    return [tuple(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def _naive_phase(
    cluster: Cluster,
    ingress: Service,
    url: str,
    env: dict[str, str],
    mercoa: Workload,
    qbo_urls: list[str],
    opts: Options,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The naive pipeline behind the same ingress, at each fixed rate; waits (bounded) for each run to drain."""
    result_file = cluster.workdir / "naive.jsonl"
    naive = cluster.spawn(
        "naive-consumer",
        [
            sys.executable,
            "-m",
            "bench.e2e",
            "--role",
            "naive",
            "--bootstrap",
            env["LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS"],
            "--topic",
            env["LEDGERFLOW_TOPIC_PREFIX"] + ".raw.mercoa",
            "--out",
            str(result_file),
            "--seconds",
            str(len(opts.rates) * (opts.seconds + opts.drain_timeout) + 60),
            *[arg for u in qbo_urls for arg in ("--sandbox", u)],
        ],
        {"PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while not Path(f"{result_file}.ready").exists():  # noqa: ASYNC240 - a marker file
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("naive consumer not ready within 60s")
        await asyncio.sleep(0.1)
    out: dict[str, Any] = {"sandboxes": len(qbo_urls)}
    for rate in opts.rates:
        tag = uuid.uuid4().hex[:8]
        cpu = Cpu([naive, ingress])
        t0 = time.time()
        load = await fixed_rate(url, mercoa, tag, rate, opts.seconds)
        marker = f"in_{tag}-"
        deadline = time.monotonic() + opts.drain_timeout
        mine: list[tuple[str, float, float]] = []
        while time.monotonic() < deadline:
            mine = [row for row in _naive_lines(result_file) if row[0].startswith(marker)]
            if len(mine) >= load.accepted:
                break
            cluster.check_alive()
            await asyncio.sleep(0.25)
        used = cpu.stop()
        span = (max(row[2] for row in mine) - t0) if mine else 0.0
        out[str(int(rate))] = {
            "target_rate": rate,
            "accepted": load.accepted,
            "delivered": len(mine),
            "latency_ms": percentiles([row[1] for row in mine]),
            "consumer_events_per_s": round(len(mine) / span, 1) if span else None,
            "cpu_s_per_1000": _per_1000(used, len(mine))[naive.name],
        }
        log(
            f"naive {rate:g}/s: delivered {len(mine)}/{load.accepted}, "
            f"p99 {out[str(int(rate))]['latency_ms']['p99']} ms"
        )
        await _wait_naive_idle(result_file, opts.drain_timeout)
    out["peak_rss_mb"] = round(naive.peak_rss / 2**20, 1)
    cluster.retire(naive)
    return out


async def _wait_naive_idle(path: Path, timeout: float) -> None:  # noqa: ASYNC109
    """Wait (bounded) until the naive consumer has written nothing for a second: its backlog is gone."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.is_file() else 0  # noqa: ASYNC240 - a small local file
        if size == last:
            return
        last = size
        await asyncio.sleep(1.0)


@dataclass
class Pipeline:
    """The ledgerflow services of the end-to-end phase."""

    url: str
    ingress: Service
    transformers: list[Service]
    connectors: dict[str, list[Service]]

    def workers(self) -> list[Service]:
        """Every service (ingress, transformers, connectors)."""
        return [self.ingress, *self.transformers, *(s for group in self.connectors.values() for s in group)]


async def _e2e_run(
    pipeline: Pipeline,
    watcher: ResultsWatcher,
    mercoa: Workload,
    label: str,
    opts: Options,
    cluster: Cluster,
    *,
    rate: float | None,
) -> dict[str, Any]:
    """One end-to-end run: the load, then wait for every SyncResult (bounded); latency and per-service costs."""
    await _wait_idle(pipeline, opts.drain_timeout)
    services = [*pipeline.workers(), *(s for s in cluster.services if s.name.startswith("sandbox"))]
    cpu = Cpu(services)
    counts_before = await _counts(pipeline)
    tag = uuid.uuid4().hex[:8]
    t0 = time.time()
    if rate is None:
        load = await saturate(pipeline.url, mercoa, tag, opts.concurrency, opts.seconds)
    else:
        load = await fixed_rate(pipeline.url, mercoa, tag, rate, opts.seconds)
    expected = load.accepted * len(pipeline.connectors)
    results = await watcher.wait_for(tag, expected, opts.drain_timeout)
    used = cpu.stop()
    counts_after = await _counts(pipeline)
    span = (max(r.kafka_ts for r in results) - t0) if results else 0.0
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    per_process = {}
    for service in pipeline.workers():
        if service.metrics_url and service.name in counts_after:
            handled = counts_after[service.name] - counts_before.get(service.name, 0.0)
            per_process[service.name] = {
                "events": int(handled),
                "events_per_s": round(handled / span, 1) if span else None,
                "cpu_s_per_1000": round(used[service.name] / handled * 1000, 3) if handled else None,
            }
    return {
        "label": label,
        "target_rate": rate,
        "load": load.summary(),
        "expected_results": expected,
        "results": len(results),
        "outcomes": outcomes,
        "results_per_s": round(len(results) / span, 1) if span else None,
        "events_per_s": round(len(results) / len(pipeline.connectors) / span, 1) if span else None,
        "latency_ms": percentiles([r.finished_ms for r in results]),
        "latency_kafka_ms": percentiles([r.kafka_ms for r in results]),
        "cpu_seconds": used,
        "cpu_s_per_1000_events": _per_1000(used, load.accepted),
        "per_process": per_process,
    }


async def _counts(pipeline: Pipeline) -> dict[str, float]:
    """Events handled so far per worker, from its /metrics (transformer: mapped events; connector: results)."""
    out = {}
    for service in pipeline.workers():
        if service.metrics_url is None:
            continue
        family = (
            "ledgerflow_transform_events" if service.name.startswith("transformer") else "ledgerflow_connector_results"
        )
        with contextlib.suppress(httpx.HTTPError):
            out[service.name] = await counter_total(service.metrics_url, family)
    return out


async def _wait_idle(pipeline: Pipeline, timeout: float) -> None:  # noqa: ASYNC109
    """Wait (bounded) until no worker's counters moved for a second: the previous run's backlog is gone."""
    deadline = time.monotonic() + timeout
    last = await _counts(pipeline)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = await _counts(pipeline)
        if now == last:
            return
        last = now


async def _start_worker(cluster: Cluster, name: str, args: list[str], env: dict[str, str]) -> Service:
    service = cluster.spawn(name, args, env, metrics=True)
    assert service.metrics_url is not None
    await wait_http(f"{service.metrics_url}/readyz", 90, cluster)
    return service


async def _warm(pipeline: Pipeline, watcher: ResultsWatcher, mercoa: Workload, timeout: float) -> int:  # noqa: ASYNC109
    """A few events through everything (consumer groups joined, tokens, vendors); returns results seen."""
    tag = uuid.uuid4().hex[:8]
    first = await saturate(pipeline.url, mercoa, tag, 1, 0.01)  # one event alone: creates the vendor in each ERP
    await watcher.wait_for(tag, first.accepted * len(pipeline.connectors), timeout)
    tag = uuid.uuid4().hex[:8]
    load = await saturate(pipeline.url, mercoa, tag, 2, 0.5)
    results = await watcher.wait_for(tag, load.accepted * len(pipeline.connectors), timeout)
    return len(results)


async def run(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every phase and return the report data (see :mod:`bench.report` for its rendering).

    Raises:
        RuntimeError: a service died or never became ready (its log tail is in the message).
    """
    started = time.time()
    mercoa, ingenious, origin = workloads()
    erp_a, erp_b = _erp_pair()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "smoke": opts.smoke,
        "started_at": datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds"),
        "payloads": {
            "mercoa_bytes": len(mercoa.body(record_id("x", 0))),
            "mercoa_origin": origin,
            "ingenious_bytes": len(ingenious.body(record_id("x", 0))),
        },
        "settings": {
            "seconds_per_run": opts.seconds,
            "rates": list(opts.rates),
            "ingress_fixed_rate": opts.ingress_rate,
            "saturation_concurrency": opts.concurrency,
            "connector_concurrency": opts.connector_concurrency,
            "connection_options": {"rate_limit_per_minute": 6_000_000, "max_concurrency": 64},
            "erps": [erp_a, erp_b],
        },
    }
    tag = uuid.uuid4().hex[:8]
    with _workdir(opts.keep) as workdir:
        log(f"work directory (service logs): {workdir}")
        cluster = Cluster(workdir)
        state_url, drop_state = await _state_url(tag, workdir)
        report["settings"]["state_store"] = state_url.split(":", 1)[0]
        sampler = asyncio.create_task(cluster.sampler())
        try:
            cluster.broker.start()
            from ledgerflow.contracts.topics import Topics

            sandboxes: dict[str, tuple[str, str]] = {}
            ports = []
            for i, erp in enumerate((erp_a, erp_b)):
                port = free_port()
                if erp == "quickbooks":
                    args = [LEDGERFLOW, "sandbox", erp, "--port", str(port)]
                else:  # the Xero sandbox enforces Xero's 60 calls/min unless started with its limits lifted
                    args = [sys.executable, "-m", "bench.e2e", "--role", "sandbox", "--erp", erp, "--port", str(port)]
                cluster.spawn(f"sandbox-{erp}-{i}", args, {"PYTHONPATH": str(ROOT)})
                sandboxes[f"{erp}-{i}"] = (erp, f"http://127.0.0.1:{port}")
                ports.append(port)
            routing_file = workdir / "routing.yaml"
            routing_file.write_text(yaml.safe_dump(_routing(sandboxes)))
            prefixes = {"ingress": f"b{tag}i", "pipeline": f"b{tag}p"}
            for prefix in prefixes.values():
                topics = [*Topics(prefix).all(), f"{prefix}.bench.baseline"]
                await ensure_topics(cluster.broker.bootstrap_servers, topics, partitions=6)
            env_i = _env(cluster, prefixes["ingress"], routing_file, state_url)
            env_p = _env(cluster, prefixes["pipeline"], routing_file, state_url)
            port_i, port_p = free_port(), free_port()
            solo = cluster.spawn("ingress-solo", [LEDGERFLOW, "ingress", "--port", str(port_i)], env_i)
            ingress = cluster.spawn("ingress", [LEDGERFLOW, "ingress", "--port", str(port_p)], env_p)
            await asyncio.gather(
                *(wait_port(p, 90, cluster) for p in ports),
                wait_http(f"http://127.0.0.1:{port_i}/readyz", 90, cluster),
                wait_http(f"http://127.0.0.1:{port_p}/readyz", 90, cluster),
            )

            log("phase 1/5: ingress")
            url_i = f"http://127.0.0.1:{port_i}"
            report["ingress"] = await _ingress_phase(cluster, solo, url_i, env_i, (mercoa, ingenious), opts, log)

            log("phase 2/5: transformer through the broker")
            from bench import transformer as transformer_bench

            report["transformer"] = await transformer_bench.measure(
                cluster.broker.bootstrap_servers,
                transformer_bench.spawner(cluster),
                cluster.retire,
                LEDGERFLOW,
                lambda prefix: _env(cluster, prefix, routing_file, state_url),
                transformer_bench.workloads(),
                opts.transformer_events,
                log,
            )

            log("phase 3/5: naive baseline pipeline")
            qbo_urls = [url for erp, url in sandboxes.values() if erp == "quickbooks"]
            report["naive"] = await _naive_phase(cluster, solo, url_i, env_i, mercoa, qbo_urls, opts, log)
            cluster.retire(solo)

            log("phase 4/5: ledgerflow end to end")
            watcher = ResultsWatcher(cluster.broker.bootstrap_servers, Topics(prefixes["pipeline"]).results)
            await watcher.start()
            conn_args = ["--concurrency", str(opts.connector_concurrency)]
            # The transformer first: it creates the state tables. Workers running StateStore.create_all
            # at the same moment on a fresh PostgreSQL database race on CREATE TABLE (UniqueViolation).
            transformer = await _start_worker(cluster, "transformer-1", [LEDGERFLOW, "transformer"], env_p)
            connectors = await asyncio.gather(
                *(
                    _start_worker(
                        cluster,
                        f"connector-{name}-1",
                        [LEDGERFLOW, "connector", "--connection", name, *conn_args],
                        env_p,
                    )
                    for name in sandboxes
                ),
            )
            started_workers = [transformer, *connectors]
            conns = {name: [service] for name, service in zip(sandboxes, connectors, strict=True)}
            pipeline = Pipeline(f"http://127.0.0.1:{port_p}", ingress, [started_workers[0]], conns)
            if await _warm(pipeline, watcher, mercoa, 90) == 0:
                raise RuntimeError("no SyncResult came back from the warm-up events")
            runs: dict[str, Any] = {}
            first_rate = opts.rates[0]
            runs["fixed_low"] = await _e2e_run(
                pipeline, watcher, mercoa, f"{first_rate:g}/s", opts, cluster, rate=first_rate
            )
            log(_line(runs["fixed_low"]))
            runs["saturation"] = await _e2e_run(pipeline, watcher, mercoa, "saturation", opts, cluster, rate=None)
            log(_line(runs["saturation"]))
            sustained = max(1.0, float(runs["saturation"]["events_per_s"] or 1.0))
            runs["sustained"] = await _e2e_run(
                pipeline, watcher, mercoa, f"{sustained:g}/s (measured capacity)", opts, cluster, rate=sustained
            )
            log(_line(runs["sustained"]))
            report["e2e"] = runs

            log("phase 5/5: scaling (2 transformers, 2 replicas of one connector)")
            first_conn = next(iter(conns))
            extra = await asyncio.gather(
                _start_worker(cluster, "transformer-2", [LEDGERFLOW, "transformer"], env_p),
                _start_worker(
                    cluster,
                    f"connector-{first_conn}-2",
                    [LEDGERFLOW, "connector", "--connection", first_conn, *conn_args],
                    env_p,
                ),
            )
            pipeline.transformers.append(extra[0])
            pipeline.connectors[first_conn].append(extra[1])
            await asyncio.sleep(3.0 if opts.smoke else 6.0)  # group rebalance
            await _warm(pipeline, watcher, mercoa, 60)
            scaled = await _e2e_run(pipeline, watcher, mercoa, "saturation, scaled out", opts, cluster, rate=None)
            log(_line(scaled))
            report["scaling"] = {
                "replicas": {"transformer": 2, first_conn: 2},
                "single": runs["saturation"],
                "scaled": scaled,
                "gain": round((scaled["events_per_s"] or 0) / (runs["saturation"]["events_per_s"] or 1), 2),
            }
            # The higher fixed rates last: far above capacity they leave a backlog behind their drain timeout.
            for rate in opts.rates[1:]:
                key = f"fixed_{int(rate)}"
                runs[key] = await _e2e_run(
                    pipeline, watcher, mercoa, f"{rate:g}/s (scaled out)", opts, cluster, rate=rate
                )
                log(_line(runs[key]))
            await watcher.stop()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            every = [*cluster.services, *cluster.retired]
            cluster.stop_all()
            report["memory_peak_rss_mb"] = {s.name: round(s.peak_rss / 2**20, 1) for s in every}
            await drop_state()
    log("transformer micro-benchmark")
    report["transformer_micro"] = transformer_microbench(mercoa.template, opts.micro_seconds)
    report["elapsed_s"] = round(time.time() - started, 1)
    return report


def _line(run_: dict[str, Any]) -> str:
    lat = run_["latency_ms"]
    return (
        f"e2e {run_['label']}: {run_['results']}/{run_['expected_results']} results, "
        f"{run_['events_per_s']} events/s, p50 {lat['p50']} ms p99 {lat['p99']} ms"
    )


if __name__ == "__main__":
    child_main(sys.argv[1:])
