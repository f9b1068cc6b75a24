"""``ledgerflow.core.delivery``: batches in key order, dead letters, and pipelined writes on a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from ledgerflow.core.delivery import DeadLetter, PipelinedWrites, run_batch
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.settings import Settings
from tests.records import FakeRecord


async def _read_all(bootstrap: str, topics: list[str], expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(seen) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                seen.extend(r for records in batches.values() for r in records)
    finally:
        await consumer.stop()
    return seen


@pytest.mark.kafka
async def test_pipelined_writes_keep_key_order_and_dead_letters(kafka_bootstrap: str, unique: str) -> None:
    out, dlq = f"{unique}.out", f"{unique}.dlq"
    await ensure_topics(kafka_bootstrap, [out, dlq], partitions=3)
    broker = broker_from_settings(Settings(), kafka_bootstrap, embedded=True)
    await broker.connect()
    try:

        async def enqueue(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> Any:
            return await broker.publish(value, topic=topic, key=key, headers=headers, no_confirm=True)

        writes = PipelinedWrites(enqueue)

        async def handle(record: Any) -> None:
            if record.value == b"broken":
                raise DeadLetter("invalid-record", "cannot map")
            await writes.publish(out, record.key, record.value, {"n": str(record.offset)})

        batch = [FakeRecord.of("in", i, f"k{i % 4}", f"v{i}".encode(), {"ce_id": f"e{i}"}) for i in range(40)]
        batch.append(FakeRecord.of("in", 40, "k1", b"broken", {"ce_id": "e40"}))
        await run_batch(batch, handle, stage="test", dlq_topic=dlq, publish=writes.publish, concurrency=8)
        assert await writes.wait() == 41
    finally:
        await broker.stop()

    seen = await _read_all(kafka_bootstrap, [out, dlq], 41)
    outputs = [r for r in seen if r.topic == out]
    for key in ("k0", "k1", "k2", "k3"):
        offsets = [int(dict(r.headers)["n"]) for r in outputs if r.key == key.encode()]
        assert offsets == sorted(offsets)
        assert len(offsets) == 10
    (dead,) = [r for r in seen if r.topic == dlq]
    assert dict(dead.headers)["ledgerflow_dlq_reason"] == b"invalid-record"


async def test_a_refused_write_fails_the_wait() -> None:
    loop = asyncio.get_running_loop()

    async def enqueue(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> Any:
        ack: asyncio.Future[Any] = loop.create_future()
        if value == b"refused":
            ack.set_exception(ConnectionError("not leader"))
        else:
            ack.set_result(None)
        return ack

    writes = PipelinedWrites(enqueue)
    await writes.publish("t", None, b"fine", {})
    await writes.publish("t", None, b"refused", {})
    with pytest.raises(ConnectionError):
        await writes.wait()
    assert await writes.wait() == 0  # nothing left pending


class _Outbox:
    """A ``publish`` that records every write (all acknowledged) or refuses the ones ``refuse`` names."""

    def __init__(self, refuse: set[bytes] | None = None) -> None:
        self.writes: list[tuple[str, bytes | None, bytes, dict[str, str]]] = []
        self.refuse = refuse or set()

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        if value in self.refuse:
            from aiokafka.errors import KafkaTimeoutError

            raise KafkaTimeoutError("broker did not acknowledge")
        self.writes.append((topic, key, value, headers))


async def test_an_unexpected_error_dead_letters_its_record_after_bounded_attempts_and_the_rest_proceed() -> None:
    outbox = _Outbox()
    calls: dict[bytes, int] = {}

    async def handle(record: Any) -> None:
        calls[record.value] = calls.get(record.value, 0) + 1
        if record.value == b"poison":
            raise TypeError("'list' object has no attribute 'items'")
        await outbox("out", record.key, record.value, {})

    batch = [FakeRecord.of("in", i, "same-key", f"v{i}".encode(), {"ce_id": f"e{i}"}) for i in range(5)]
    batch.insert(2, FakeRecord.of("in", 99, "same-key", b"poison", {"ce_id": "e-poison"}))
    batch = sorted(batch, key=lambda r: r.offset)
    await run_batch(batch, handle, stage="transform", dlq_topic="dlq", publish=outbox, concurrency=4, retry_wait=0)

    assert calls[b"poison"] == 3
    assert [w[2] for w in outbox.writes if w[0] == "out"] == [f"v{i}".encode() for i in range(5)]
    (dead,) = [w for w in outbox.writes if w[0] == "dlq"]
    assert dead[3]["ledgerflow_dlq_reason"] == "unexpected-error"
    assert dead[3]["ledgerflow_dlq_stage"] == "transform"
    assert dead[3]["ledgerflow_dlq_exception"] == "builtins.TypeError"
    assert dead[3]["ledgerflow_dlq_detail"] == "TypeError: 'list' object has no attribute 'items'"
    assert dead[3]["ledgerflow_dlq_attempts"] == "3"


async def test_an_infrastructure_error_redelivers_the_batch_without_republishing_what_was_durable() -> None:
    from ledgerflow.core.delivery import DurableOutcomes

    outbox = _Outbox(refuse={b"v3"})
    durable = DurableOutcomes()

    async def handle(record: Any) -> None:
        await outbox("out", record.key, record.value, {})

    batch = [FakeRecord.of("in", i, f"k{i}", f"v{i}".encode(), {"ce_id": f"e{i}"}) for i in range(6)]
    completed: list[Any] = []
    with pytest.raises(Exception, match="did not acknowledge"):
        await run_batch(
            batch,
            handle,
            stage="t",
            dlq_topic="dlq",
            publish=outbox,
            concurrency=2,
            durable=durable,
            completed=completed,
        )
    durable.remember(completed)
    assert sorted(w[2] for w in outbox.writes) == [b"v0", b"v1", b"v2", b"v4", b"v5"]
    assert not any(w[0] == "dlq" for w in outbox.writes), "a refused write is not the record's fault"

    outbox.refuse.clear()  # the broker is back: the batch is redelivered from its first offset
    await run_batch(batch, handle, stage="t", dlq_topic="dlq", publish=outbox, concurrency=2, durable=durable)
    assert sorted(w[2] for w in outbox.writes) == [b"v0", b"v1", b"v2", b"v3", b"v4", b"v5"]
