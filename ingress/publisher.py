"""Durable hand-off of accepted webhooks to Kafka: returns only once the broker acknowledged."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

__all__ = ["BrokerUnavailable", "FastStreamPublisher", "Publisher"]


class BrokerUnavailable(Exception):  # noqa: N818 - maps to HTTP 503
    """The broker did not acknowledge the write in time or refused it; the sender should retry."""


class Publisher(Protocol):
    """Writes one record and waits for the broker's acknowledgement."""

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write ``value`` under ``key`` with ``headers``.

        Raises:
            BrokerUnavailable: when the write is not acknowledged within the publisher's timeout.
        """


class FastStreamPublisher:
    """:class:`Publisher` over a connected FastStream ``KafkaBroker`` (``acks=all``).

    Args:
        broker: a started broker.
        timeout: seconds to wait for the acknowledgement before giving up with 503.
    """

    def __init__(self, broker: KafkaBroker, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Publish and await the acknowledgement (see :class:`Publisher`)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.broker.publish(value, topic=topic, key=key, headers=headers)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"broker did not acknowledge within {self.timeout:g}s") from exc
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"broker refused the write: {type(exc).__name__}") from exc
