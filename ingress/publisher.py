"""Durable hand-off of accepted webhooks to Kafka: returns only once the broker acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ledgerflow.core import tracing
from ledgerflow.core.kafka import kafka_client_options, producer_options
from ledgerflow.core.settings import Settings

__all__ = [
    "INGRESS_PRODUCER_OPTIONS",
    "RECORD_OVERHEAD_BYTES",
    "BrokerUnavailable",
    "KafkaPublisher",
    "Publisher",
    "RecordTooLarge",
    "ingress_producer",
    "max_request_size",
]

RECORD_OVERHEAD_BYTES = 64 * 1024
"""Room above the body limit for what a raw record carries besides the body: its key (≤ 256
characters) and CloudEvents headers (a few hundred bytes), the record and batch framing."""

INGRESS_PRODUCER_OPTIONS: dict[str, Any] = {"max_batch_size": 512 * 1024}
"""Producer options the ingress adds to :func:`ledgerflow.core.kafka.producer_options` (durability unchanged).

Webhook bodies are ~1–20 KB; with aiokafka's default 16 KB batches every body travels alone in
its partition's batch and the single in-flight produce request per broker caps throughput near
1,500 records/s. 512 KiB batches let the requests that arrive while one produce is in flight go
out together in the next one (measured with ``python -m bench.ingress``: ~4× more records/s).
"""


class BrokerUnavailable(Exception):  # noqa: N818 - maps to HTTP 503
    """The broker did not acknowledge the write in time or refused it; the sender should retry.

    ``maybe_stored`` is True when the write was handed to the producer but its acknowledgement did
    not come in time: it may still land. A retry is safe either way: the event id is
    deterministic, so a second copy is recognised downstream and booked once.
    """

    def __init__(self, message: str, *, maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.maybe_stored = maybe_stored


class RecordTooLarge(Exception):  # noqa: N818 - maps to HTTP 413
    """The broker (or the producer) refuses the record for its size: retrying cannot help."""


def max_request_size(settings: Settings) -> int:
    """The producer's ``max_request_size``: the body limit plus :data:`RECORD_OVERHEAD_BYTES`.

    aiokafka's default (1 MiB) equals the default body limit, so a body a few hundred bytes under
    the limit plus its key and headers was refused by the producer on every try (a 503 forever).
    """
    return settings.ingress_max_body_bytes + RECORD_OVERHEAD_BYTES


class Publisher(Protocol):
    """Writes one record and waits for the broker's acknowledgement."""

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write ``value`` under ``key`` with ``headers``.

        Raises:
            BrokerUnavailable: when the write is not acknowledged within the publisher's timeout.
            RecordTooLarge: when the broker refuses the record for its size (not worth retrying).
        """


class KafkaPublisher:
    """:class:`Publisher` over a started aiokafka producer (:func:`ingress_producer`: ``acks=all``).

    The ingress writes bytes it already has under headers it already built, so it talks to
    aiokafka directly: FastStream's publish path (correlation id, middlewares, serialisation)
    was a sixth of the ingress's CPU per webhook under py-spy, for nothing the ingress uses.

    Args:
        producer: a started producer.
        timeout: seconds to wait for the acknowledgement before giving up with 503.
    """

    def __init__(self, producer: AIOKafkaProducer, timeout: float) -> None:
        self.producer = producer
        self.timeout = timeout

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Publish and await the acknowledgement (see :class:`Publisher`)."""
        try:
            with tracing.publish_span(topic, headers):  # off: a no-op; on: the record carries this span's context
                encoded = [(name, text.encode()) for name, text in headers.items()]
                async with asyncio.timeout(self.timeout):
                    ack = await self.producer.send(topic, value, key=key, headers=encoded)
                    await ack
        except TimeoutError as exc:
            raise BrokerUnavailable(f"broker did not acknowledge within {self.timeout:g}s", maybe_stored=True) from exc
        except MessageSizeTooLargeError as exc:
            raise RecordTooLarge(f"the broker refuses a record of this size ({len(value)} bytes body)") from exc
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"broker refused the write: {type(exc).__name__}") from exc


def ingress_producer(settings: Settings, bootstrap_servers: str, *, embedded: bool) -> AIOKafkaProducer:
    """The ingress's aiokafka producer: ledgerflow's durable defaults, security settings, large batches.

    :func:`ledgerflow.core.kafka.producer_options` (``acks=all``, idempotence off only on the embedded
    broker) plus :data:`INGRESS_PRODUCER_OPTIONS`, and TLS/SASL from the ``LEDGERFLOW_KAFKA_*``
    settings, and a ``max_request_size`` above the body limit (:func:`max_request_size`). Start it
    (``await producer.start()``) before publishing; stop it on shutdown.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=settings.kafka_client_id,
        **kafka_client_options(settings),
        **producer_options(settings, embedded=embedded),
        **INGRESS_PRODUCER_OPTIONS,
        max_request_size=max_request_size(settings),
    )
