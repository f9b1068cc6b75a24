"""Consumed Kafka records for tests that drive a stage's batch handler without a broker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class FakeRecord:
    """What aiokafka hands a stage per record (:class:`ledgerflow.core.delivery.ConsumedRecord`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))

    @classmethod
    def of(cls, topic: str, offset: int, key: str, value: bytes, headers: dict[str, str]) -> FakeRecord:
        """A record on partition 0 of ``topic`` with string headers encoded as UTF-8."""
        return cls(topic, 0, offset, key.encode(), value, [(k, v.encode()) for k, v in headers.items()])
