"""Durable hand-off of accepted webhooks to Kafka: returns only once the broker acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from ledgerflow.kafka import broker_from_settings
from ledgerflow.settings import Settings

__all__ = ["INGRESS_PRODUCER_OPTIONS", "BrokerUnavailable", "FastStreamPublisher", "Publisher", "ingress_broker"]

INGRESS_PRODUCER_OPTIONS: dict[str, Any] = {"max_batch_size": 512 * 1024}
"""Producer options the ingress adds to :func:`ledgerflow.kafka.producer_options` (durability unchanged).

Webhook bodies are ~1–20 KB; with aiokafka's default 16 KB batches every body travels alone in
its partition's batch and the single in-flight produce request per broker caps throughput near
1,500 records/s. 512 KiB batches let the requests that arrive while one produce is in flight go
out together in the next one (measured with ``python -m bench.ingress``: ~4× more records/s).
"""


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


def ingress_broker(settings: Settings, bootstrap_servers: str, *, embedded: bool) -> KafkaBroker:
    """A FastStream ``KafkaBroker`` for the ingress publisher.

    The shared durable defaults (``acks=all``) plus :data:`INGRESS_PRODUCER_OPTIONS`; connect it
    (``await broker.connect()``) before publishing.
    """
    return broker_from_settings(settings, bootstrap_servers, embedded=embedded, **INGRESS_PRODUCER_OPTIONS)
