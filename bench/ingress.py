"""Ingress benchmark: durably accepted webhooks per second, latency and peak RSS, beside a naive baseline.

``python -m bench.ingress [--duration S] [--concurrency N] [--payload FILE] [--loaders P]``

For each contender, in turn, on loopback:

1. a fresh embedded Tansu broker (:class:`ledgerflow.core.embedded.EmbeddedBroker`) and its raw topic;
2. the server under uvicorn (uvloop + httptools, one process) in a subprocess:

   * ``ingress`` — :func:`ledgerflow.ingress.app.create_app` with the Mercoa source (token check, envelope,
     CloudEvents headers, metrics) publishing through :class:`ledgerflow.ingress.publisher.KafkaPublisher`
     (``acks=all``, waits for the acknowledgement before 202);
   * ``baseline`` — :func:`baseline_app`, the naive ingress: a bare ASGI app that awaits one aiokafka
     ``send_and_wait`` (``acks=all``) per request and answers 202, with no checks at all;

3. the closed-loop load generator of :mod:`bench.common` in separate processes, posting the 10.8 KB
   Mercoa ``invoice.created`` sample (minified; a generated body of the same size when
   ``../shared`` is absent) with 64 different invoice ids;
4. the figures: 202s per second in the measured window, p50/p99/p99.9 latency, the server's peak
   RSS (``VmHWM``), and the broker's record count against the number of 202s (durability check).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

from bench.common import ACCEPTED, LoadResult, build_request, percentile, run_load

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "samples" / "mercoa" / "invoice.created.json"
TENANT = "bench"
TOKEN = "bench-token"
PREFIX = "bench"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _env_bootstrap() -> str:
    return os.environ["BENCH_BOOTSTRAP"]


def ingress_app() -> Any:
    """uvicorn factory: the real ingress for tenant ``bench`` (Mercoa token ``bench-token``)."""
    from ledgerflow.core.settings import Routing, Settings
    from ledgerflow.ingress.app import create_app
    from ledgerflow.ingress.publisher import KafkaPublisher, ingress_producer

    settings = Settings(kafka_bootstrap_servers=_env_bootstrap(), topic_prefix=PREFIX)
    routing = Routing.model_validate({"tenants": {TENANT: {"sources": {"mercoa": {"tokens": [TOKEN]}}}}})
    producer = ingress_producer(settings, _env_bootstrap(), embedded=True)
    publisher: Any = KafkaPublisher(producer, settings.ingress_publish_timeout_seconds)
    state = None
    if os.environ.get("BENCH_OUTBOX_URL"):
        # What `ledgerflow up` runs: the outbox row in the state store first, then the broker.
        from ledgerflow.core.outbox import Outbox, OutboxPublisher
        from ledgerflow.core.state import StateStore

        state = StateStore(os.environ["BENCH_OUTBOX_URL"])
        publisher = OutboxPublisher(Outbox(state), publisher)
    app = create_app(settings, routing, publisher)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if state is not None:
            await state.create_all()
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()
            if state is not None:
                await state.close()

    app.router.lifespan_context = lifespan
    return app


def baseline_app() -> Any:
    """uvicorn factory: the naive ingress — read the body, ``await producer.send_and_wait``, answer 202."""
    from aiokafka import AIOKafkaProducer

    topic = f"{PREFIX}.raw.mercoa"
    state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    producer = AIOKafkaProducer(bootstrap_servers=_env_bootstrap(), acks="all")
                    await producer.start()
                    state["producer"] = producer
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["producer"].stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await state["producer"].send_and_wait(topic, body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"17")]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"accepted":true}'})

    return app


def _payloads(path: Path | None) -> list[bytes]:
    """64 minified Mercoa ``invoice.created`` bodies differing only in the invoice id."""
    source = path or SAMPLE
    if source.is_file():
        doc = orjson.loads(source.read_bytes())
    else:  # no ../shared: a generated invoice of the same size
        doc = {
            "eventType": "invoice.created",
            "invoice": {"id": "inv_0", "currency": "USD", "amount": "1000.00", "memo": "x" * 10_500},
        }
    bodies = []
    for i in range(64):
        doc["invoice"]["id"] = f"inv_bench_{i:04d}"
        bodies.append(orjson.dumps(doc))
    return bodies


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


def _peak_rss_mib(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of ``pid`` in MiB; 0.0 when unknown (non-Linux)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _records_on(bootstrap: str, topic: str, limit_s: float = 120.0) -> int:
    """How many records ``topic`` holds, counted by reading them all.

    (Tansu's offsets are not dense under batched writes, so end − start offsets is not a count.)
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count = 0
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            count += sum(len(records) for records in batches.values())
        return count
    finally:
        await consumer.stop()


def measure(factory: str, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    """Run one contender (``bench.ingress:<factory>``) on a fresh broker; return its figures."""
    from ledgerflow.core.embedded import EmbeddedBroker
    from ledgerflow.core.kafka import ensure_topics

    topic = f"{PREFIX}.raw.mercoa"
    with EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap_servers, [topic], partitions=args.partitions))
        port = _free_port()
        env = {**os.environ, "BENCH_BOOTSTRAP": broker.bootstrap_servers, "PYTHONPATH": str(ROOT)}
        if args.outbox and factory == "ingress_app":
            folder = tempfile.mkdtemp(prefix="bench-outbox-")
            env["BENCH_OUTBOX_URL"] = f"sqlite+aiosqlite:///{folder}/state.db"
        cmd = [
            sys.executable, "-m", "uvicorn", "--factory", f"bench.ingress:{factory}",
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning", "--lifespan", "on",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        try:
            _wait_port(port, proc)
            host = f"127.0.0.1:{port}"
            path = f"/webhooks/{TENANT}/mercoa"
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
            requests = [build_request("POST", path, host, headers, body) for body in bodies]
            result: LoadResult = run_load(
                "127.0.0.1",
                port,
                requests,
                connections=args.concurrency,
                duration=args.duration,
                warmup=args.warmup,
                processes=args.loaders,
            )
            rss = _peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stored = asyncio.run(_records_on(broker.bootstrap_servers, topic))
    lat = result.latencies
    return {
        "name": factory.removesuffix("_app"),
        "accepted_per_s": result.rate(),
        "statuses": dict(result.statuses),
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "p999_ms": percentile(lat, 0.999) * 1000,
        "peak_rss_mib": rss,
        "accepted_total": result.accepted_total,
        "records_on_topic": stored,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, measure the baseline then the ingress, print both; exit code 0 when both ran."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per contender")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections (closed loop)")
    parser.add_argument("--loaders", type=int, default=1, help="load-generator processes")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the raw topic")
    parser.add_argument("--payload", type=Path, help="webhook body (default: the Mercoa sample)")
    parser.add_argument("--only", choices=["ingress", "baseline"], help="measure one contender")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--outbox", action="store_true", help="the ingress writes each webhook to a SQLite outbox first (`up`)"
    )
    args = parser.parse_args(argv)
    bodies = _payloads(args.payload)
    load_before = os.getloadavg()
    contenders = [c for c in ("baseline_app", "ingress_app") if not args.only or c.startswith(args.only)]
    rows = [measure(c, args, bodies) for c in contenders]
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(
        f"payload {len(bodies[0])} B, {args.concurrency} connections, {args.loaders} load process(es), "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up, {os.cpu_count()} CPUs"
    )
    cols = ("202/s", "p50 ms", "p99 ms", "p99.9 ms", "RSS MiB", "202s", "on topic")
    print(f"{'':10} " + " ".join(f"{c:>9}" for c in cols) + "  other")
    for r in rows:
        other = {k: v for k, v in r["statuses"].items() if k not in ACCEPTED}
        print(
            f"{r['name']:10} {r['accepted_per_s']:9.0f} {r['p50_ms']:9.1f} {r['p99_ms']:9.1f} {r['p999_ms']:9.1f} "
            f"{r['peak_rss_mib']:9.0f} {r['accepted_total']:9d} {r['records_on_topic']:9d}  {other or ''}"
        )
    print(
        f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
        "(other processes on the machine skew every figure)"
    )
    if len(rows) == 2 and rows[0]["accepted_per_s"]:
        print(f"ingress / baseline throughput: {rows[1]['accepted_per_s'] / rows[0]['accepted_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
