"""Kafka plumbing: broker construction from settings, topic creation, producer defaults.

Producer defaults favour durability: ``acks=all``, idempotence on against real Kafka (off
against the embedded Tansu broker, which rejects ``InitProducerId``), small linger for batching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.security import BaseSecurity, SASLOAuthBearer, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import REGISTRY

from ledgerflow.core import tracing
from ledgerflow.core.kafka_security import kafka_client_options
from ledgerflow.core.settings import Settings

__all__ = [
    "LedgerflowBroker",
    "broker_from_settings",
    "ensure_topics",
    "kafka_client_options",
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


def security_from_settings(settings: Settings) -> tuple[BaseSecurity | None, dict[str, Any]]:
    """FastStream's form of :func:`~ledgerflow.core.kafka_security.kafka_client_options`.

    Returns:
        The ``security`` object for ``KafkaBroker`` (None for PLAINTEXT) and the extra keyword
        arguments it cannot carry (``sasl_oauth_token_provider`` for OAUTHBEARER and AWS MSK IAM).

    Raises:
        ConfigError: as :func:`~ledgerflow.core.kafka_security.kafka_client_options`.

    """
    options = kafka_client_options(settings)
    protocol = options["security_protocol"]
    context = options.get("ssl_context")
    use_ssl = protocol.endswith("SSL")
    mechanism = options.get("sasl_mechanism")
    if mechanism is None:
        return (BaseSecurity(ssl_context=context, use_ssl=True) if use_ssl else None), {}
    if mechanism == "OAUTHBEARER":
        provider = {"sasl_oauth_token_provider": options["sasl_oauth_token_provider"]}
        return SASLOAuthBearer(ssl_context=context, use_ssl=use_ssl), provider
    cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[mechanism]
    user, password = options["sasl_plain_username"], options["sasl_plain_password"]
    return cls(username=user, password=password, ssl_context=context, use_ssl=use_ssl), {}


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


_PROMETHEUS: list[KafkaPrometheusMiddleware] = []


def prometheus_middleware() -> KafkaPrometheusMiddleware:
    """FastStream's Prometheus middleware on the default registry, one per process.

    It exports ``faststream_received_messages_total``, ``…_processed_messages_exceptions_total``
    (the dashboard's handler-exception panel) and their siblings for every subscriber and
    publisher of every broker the process builds.
    """
    if not _PROMETHEUS:
        _PROMETHEUS.append(KafkaPrometheusMiddleware(registry=REGISTRY, app_name="ledgerflow"))
    return _PROMETHEUS[0]


def broker_from_settings(settings: Settings, bootstrap_servers: str, *, embedded: bool, **kwargs: Any) -> KafkaBroker:
    """A FastStream ``KafkaBroker`` with ledgerflow's producer defaults and security settings.

    FastStream's Prometheus middleware is on (:func:`prometheus_middleware`). FastStream's
    per-message logs go to the ``ledgerflow.core.kafka.messages`` logger at DEBUG (so they follow
    the process's logging configuration instead of printing to stdout).
    """
    kwargs.setdefault("middlewares", (prometheus_middleware(), *tracing.broker_middlewares()))
    kwargs.setdefault("logger", logging.getLogger("ledgerflow.core.kafka.messages"))
    kwargs.setdefault("log_level", logging.DEBUG)
    security, extra = security_from_settings(settings)
    return LedgerflowBroker(
        bootstrap_servers,
        client_id=settings.kafka_client_id,
        security=security,
        **extra,
        **producer_options(settings, embedded=embedded),
        **kwargs,
    )


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    partitions: int,
    replication: int = 1,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet; return the ones created.

    ``client_options``: the connection's security (:func:`kafka_client_options`); PLAINTEXT when None.

    Raises:
        aiokafka.errors.KafkaError: when the broker cannot be reached or refuses a topic.

    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(client_options or {}))
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


async def missing_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    timeout: float = 3.0,  # noqa: ASYNC109 - bounds each metadata call, not the caller
    *,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """The topics of ``names`` the broker does not have (readiness checks).

    ``client_options``: the connection's security (:func:`kafka_client_options`); PLAINTEXT when None.

    Raises:
        TimeoutError: when the broker does not answer within ``timeout`` seconds.
        aiokafka.errors.KafkaError: when it cannot be reached.

    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000), **(client_options or {})
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
    finally:
        await admin.close()
    return [n for n in names if n not in existing]
