"""Transformer throughput through the broker: events per second, and per CPU-second of the worker.

For each workload (the Mercoa ``invoice.created`` sample → ``bill``, a small INGENIOUS vendor
invoice → ``bill``) and each contender:

* ``ledgerflow`` — the real worker, ``ledgerflow transformer``, in its own process;
* ``baseline`` — :func:`naive_transformer` (``python -m bench.transformer --role naive``): one
  aiokafka consumer in the same kind of consumer group that ``json.loads`` each raw event, copies
  the fields the mapper reads into a dict (:func:`baseline_copy`, the issue's baseline),
  ``json.dumps`` it to the output topic and commits each batch after its writes were acknowledged;

the worker is started and joined to its group first, then ``events`` raw records with the
ingress's CloudEvents headers are written to the raw topic as fast as the producer can (faster
than either contender consumes them, so the worker is saturated from its first batch). Figures:
outputs per second between the first and the last output record's Kafka timestamp, and outputs
per CPU-second of the worker process (psutil user + system time): "per core".

Used by ``python -m bench`` (phase 2) and runnable alone::

    python -m bench.transformer [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

INVOICE_FIELDS = (
    "id",
    "status",
    "amount",
    "currency",
    "invoiceNumber",
    "invoiceDate",
    "dueDate",
    "deductionDate",
    "createdAt",
    "updatedAt",
    "noteToSelf",
    "vendorId",
    "payerId",
    "foreignId",
    "serviceStartDate",
    "serviceEndDate",
)
"""Mercoa invoice fields the mapper reads (``transformers/mercoa``)."""
LINE_FIELDS = ("id", "description", "quantity", "unitPrice", "amount", "currency", "glAccountId", "metadata")
"""Mercoa line item fields the mapper reads."""


def baseline_copy(body: bytes) -> dict[str, Any]:
    """The issue's transformer baseline: ``json.loads`` plus a dict copy of the fields a mapper reads.

    Mercoa bodies (``invoice``) copy :data:`INVOICE_FIELDS`, the vendor and the line items'
    :data:`LINE_FIELDS`; INGENIOUS bodies (``data``) copy the top level and the line items.
    """
    payload = json.loads(body)
    if "invoice" in payload:
        invoice = payload["invoice"]
        copy = {k: invoice.get(k) for k in INVOICE_FIELDS}
        copy["vendor"] = dict(invoice.get("vendor") or {})
        copy["lineItems"] = [{k: line.get(k) for k in LINE_FIELDS} for line in invoice.get("lineItems") or []]
        return copy
    data = payload.get("data") or {}
    copy = {k: v for k, v in data.items() if k != "line_items"}
    copy["line_items"] = [dict(line) for line in data.get("line_items") or []]
    return copy


async def naive_transformer(bootstrap: str, topics: list[str], out_topic: str, group: str, deadline: float) -> None:
    """The baseline worker: consume ``topics`` in ``group``, :func:`baseline_copy`, write to ``out_topic``.

    Each batch's writes are sent at once and awaited together before the batch is committed (the
    same delivery discipline as the real worker, without its mapping, validation or headers).
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        while time.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            acks = [
                await producer.send(out_topic, json.dumps(baseline_copy(r.value or b"")).encode(), key=r.key)
                for records in batches.values()
                for r in records
            ]
            if acks:
                await asyncio.gather(*acks)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def raw_headers(source: str, event_type: str, record_id: str, obj: str | None) -> list[tuple[str, bytes]]:
    """CloudEvents headers as the ingress writes them for a ``source`` webhook of ``event_type``."""
    from ledgerflow.contracts.events import EventAttributes

    extensions = {"sourceevent": event_type, "method": "POST"}
    if obj:
        extensions["object"] = obj
    attrs = EventAttributes(
        id=f"bench-{record_id}",
        source=f"/tenants/bench/{source}",
        type=f"io.ledgerflow.raw.{source}.{event_type}",
        tenant="bench",
        subject=record_id,
        extensions=extensions,
    )
    return [(k, v.encode()) for k, v in attrs.to_headers().items()]


async def preload(bootstrap: str, topic: str, records: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> float:
    """Write ``(record id, body, headers)`` records to ``topic`` as fast as possible; return the seconds it took."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        acks = [await producer.send(topic, body, key=rid.encode(), headers=headers) for rid, body, headers in records]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def count_outputs(bootstrap: str, topic: str, tag: str, expected: int, timeout: float) -> list[float]:  # noqa: ASYNC109
    """Kafka timestamps (s) of the records on ``topic`` whose key contains ``tag``, until ``expected`` or timeout."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    stamps: list[float] = []
    needle = tag.encode()
    try:
        deadline = time.monotonic() + timeout
        while len(stamps) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            stamps += [r.timestamp / 1000 for rs in batches.values() for r in rs if r.key and needle in r.key]
    finally:
        await consumer.stop()
    return stamps


def child_main(argv: list[str]) -> None:
    """``python -m bench.transformer --role naive ...``: run the baseline worker until its deadline."""
    parser = argparse.ArgumentParser(prog="python -m bench.transformer")
    parser.add_argument("--role", choices=["naive"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    asyncio.run(naive_transformer(args.bootstrap, args.topic, args.out, args.group, time.time() + args.seconds))


async def measure(
    bootstrap: str,
    spawn: Callable[[str, list[str], dict[str, str]], Any],
    retire: Callable[[Any], None],
    ledgerflow_cmd: str,
    env_for: Callable[[str], dict[str, str]],
    workloads: dict[str, tuple[str, str, str | None, Callable[[str], bytes]]],
    events: int,
    log: Callable[[str], None],
    wait_s: float = 180.0,
) -> dict[str, Any]:
    """Run every (workload, contender) pair; return ``{workload: {contender: figures}}``.

    Args:
        bootstrap: the broker.
        spawn: ``await spawn(name, args, env)`` → a started service with ``cpu_seconds()``
            (:func:`spawner`: ``bench.e2e.Cluster.spawn``, ledgerflow workers awaited until ready).
        retire: stops a service and keeps its figures (``bench.e2e.Cluster.retire``).
        ledgerflow_cmd: path of the ``ledgerflow`` command.
        env_for: ``LEDGERFLOW_*`` variables for a topic prefix.
        workloads: name → (source, event type, object route, body for a record id).
        events: raw events per run.
        log: progress lines.
        wait_s: seconds to wait for the outputs of one run.
    """
    from bench.e2e import ensure_topics, record_id
    from ledgerflow.contracts.topics import Topics

    out: dict[str, Any] = {}
    for name, (source, event_type, obj, body_for) in workloads.items():
        out[name] = {}
        for contender in ("ledgerflow", "baseline"):
            tag = uuid.uuid4().hex[:8]
            topics = Topics(f"bt{tag}")
            raw, canonical = topics.raw(source), topics.canonical("bill")
            await ensure_topics(bootstrap, [*topics.all(), raw], partitions=6)
            if contender == "ledgerflow":
                service = await spawn(
                    f"transformer-bench-{name}", [ledgerflow_cmd, "transformer"], env_for(topics.prefix)
                )
            else:
                args = [sys.executable, "-m", "bench.transformer", "--role", "naive", "--bootstrap", bootstrap]
                args += ["--topic", raw, "--out", canonical, "--group", topics.group("naive")]
                service = await spawn(f"transformer-baseline-{name}", args, {})
                await asyncio.sleep(6.0)  # group join (the broker's rebalance delay)
            try:
                rids = [record_id(tag, i) for i in range(events)]
                records = [(rid, body_for(rid), raw_headers(source, event_type, rid, obj)) for rid in rids]
                cpu0 = service.cpu_seconds()
                load_s = await preload(bootstrap, raw, records)
                stamps = await count_outputs(bootstrap, canonical, tag, events, wait_s)
                cpu = service.cpu_seconds() - cpu0
            finally:
                retire(service)
            span = (max(stamps) - min(stamps)) if len(stamps) > 1 else 0.0
            figures = {
                "events": events,
                "outputs": len(stamps),
                "events_per_s": round(len(stamps) / span, 1) if span else None,
                "events_per_cpu_s": round(len(stamps) / cpu, 1) if cpu else None,
                "cpu_s": round(cpu, 2),
                "preload_s": round(load_s, 2),
            }
            out[name][contender] = figures
            log(
                f"transformer {name} {contender}: {figures['outputs']}/{events} outputs, "
                f"{figures['events_per_s']}/s, {figures['events_per_cpu_s']} per CPU-second"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the transformer benchmark alone on a fresh embedded broker and print its figures as JSON."""
    from bench import e2e

    parser = argparse.ArgumentParser(prog="python -m bench.transformer", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="raw events per run")
    args = parser.parse_args(argv)

    async def run() -> dict[str, Any]:
        with e2e._workdir(keep=False) as workdir:
            cluster = e2e.Cluster(workdir)
            cluster.broker.start()
            try:
                return await measure(
                    cluster.broker.bootstrap_servers,
                    spawner(cluster),
                    cluster.retire,
                    e2e.LEDGERFLOW,
                    lambda prefix: _standalone_env(cluster, prefix, workdir),
                    workloads(),
                    args.events,
                    lambda line: print(line, file=sys.stderr, flush=True),
                )
            finally:
                cluster.stop_all()

    print(orjson.dumps(asyncio.run(run()), option=orjson.OPT_INDENT_2).decode())
    return 0


def workloads() -> dict[str, tuple[str, str, str | None, Callable[[str], bytes]]]:
    """The two workloads of the issue: Mercoa invoice → bill, INGENIOUS vendor invoice → bill."""
    from bench.e2e import workloads as e2e_workloads

    mercoa, ingenious, _ = e2e_workloads()
    return {
        "mercoa": ("mercoa", "invoice.created", None, mercoa.body),
        "ingenious": ("ingenious", "vendor_invoice.sync", "vendor_invoice", ingenious.body),
    }


def spawner(cluster: Any) -> Callable[[str, list[str], dict[str, str]], Any]:
    """``spawn(name, args, env)`` for :func:`measure`: ledgerflow workers are awaited until ready."""
    from bench.e2e import _start_worker

    async def spawn(name: str, args: list[str], env: dict[str, str]) -> Any:
        if args[-1] == "transformer":
            return await _start_worker(cluster, name, args, env)
        return cluster.spawn(name, args, env)

    return spawn


def _standalone_env(cluster: Any, prefix: str, workdir: Any) -> dict[str, str]:
    from bench.e2e import _env as e2e_env

    routing = workdir / "transformer-routing.yaml"
    if not routing.exists():
        routing.write_text("tenants:\n  bench:\n    sources: {}\n")
    return e2e_env(cluster, prefix, routing, f"sqlite+aiosqlite:///{workdir / 'transformer-state.db'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        child_main(sys.argv[1:])
    else:
        sys.exit(main())
