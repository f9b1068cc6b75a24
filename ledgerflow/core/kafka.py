"""Kafka plumbing: broker construction from settings, topic creation, producer defaults.

Producer defaults favour durability: ``acks=all``, idempotence on against real Kafka (off
against the embedded Tansu broker, which rejects ``InitProducerId``), small linger for batching.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from ledgerflow.core.settings import Settings

__all__ = [
    "LedgerflowBroker",
    "broker_from_settings",
    "ensure_topics",
    "missing_topics",
    "producer_options",
    "security_from_settings",
]

log = logging.getLogger(__name__)


def producer_options(settings: Settings, *, embedded: bool) -> dict[str, Any]:
    """Keyword arguments for a durable producer.

    ``embedded`` says the target is the embedded Tansu broker (idempotence unsupported).
    """
    idempotence = settings.kafka_enable_idempotence
    if idempotence is None:
        idempotence = not embedded
    return {"acks": "all", "enable_idempotence": idempotence, "linger_ms": 2}


def security_from_settings(settings: Settings) -> BaseSecurity | None:
    """FastStream security (TLS, SASL PLAIN or SCRAM) from the ``LEDGERFLOW_KAFKA_*`` settings; None for PLAINTEXT."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    use_ssl = proto.endswith("SSL")
    mech = (settings.kafka_sasl_mechanism or "").upper()
    if proto.startswith("SASL"):
        user = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        cls = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}.get(mech, SASLPlaintext)
        return cls(username=user, password=password, use_ssl=use_ssl)

    return BaseSecurity(ssl_context=ssl.create_default_context(), use_ssl=True)


class LedgerflowBroker(KafkaBroker):
    """A FastStream ``KafkaBroker`` that starts its subscribers concurrently.

    Every subscriber is a consumer joining its own group, and a join waits out the broker's
    rebalance delay (about 3–5 s on Kafka and Tansu). FastStream starts subscribers one after
    another, so a worker with several (a connector has two per connection, ``ledgerflow up`` a
    dozen) took that delay times their number to become ready; here they join at once.
    """

    async def start(self) -> None:
        """Connect, start every subscriber concurrently, then the publishers."""
        await self.connect()
        await asyncio.gather(*(sub.start() for sub in self.subscribers))
        for pub in self.publishers:
            await pub.start()
        self.running = True


def broker_from_settings(settings: Settings, bootstrap_servers: str, *, embedded: bool, **kwargs: Any) -> KafkaBroker:
    """A FastStream ``KafkaBroker`` with ledgerflow's producer defaults and security settings.

    FastStream's per-message logs go to the ``ledgerflow.core.kafka.messages`` logger at DEBUG (so they
    follow the process's logging configuration instead of printing to stdout).
    """
    kwargs.setdefault("logger", logging.getLogger("ledgerflow.core.kafka.messages"))
    kwargs.setdefault("log_level", logging.DEBUG)
    return LedgerflowBroker(
        bootstrap_servers,
        client_id=settings.kafka_client_id,
        security=security_from_settings(settings),
        **producer_options(settings, embedded=embedded),
        **kwargs,
    )


async def ensure_topics(
    bootstrap_servers: str, names: Iterable[str], *, partitions: int, replication: int = 1
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet; return the ones created.

    Raises:
        aiokafka.errors.KafkaError: when the broker cannot be reached or refuses a topic.

    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if not wanted:
            return []
        resp = await admin.create_topics([NewTopic(n, partitions, replication) for n in wanted])
        for name, code, message in resp.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise KafkaError(f"cannot create topic {name}: error {code} {message}")
        log.info("created topics %s", ", ".join(wanted))
        return wanted
    finally:
        await admin.close()


async def missing_topics(bootstrap_servers: str, names: Iterable[str], timeout: float = 3.0) -> list[str]:  # noqa: ASYNC109
    """The topics of ``names`` the broker does not have (readiness checks).

    Raises:
        TimeoutError: when the broker does not answer within ``timeout`` seconds.
        aiokafka.errors.KafkaError: when it cannot be reached.

    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
    finally:
        await admin.close()
    return [n for n in names if n not in existing]
