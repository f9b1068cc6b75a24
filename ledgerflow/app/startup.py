"""Start-up checks and one-line failures for the ``ledgerflow`` commands.

A service that cannot start says why in one line and exits non-zero; the traceback is shown only
with ``ledgerflow --debug``. :func:`preflight` checks, in order, what a service needs before it
starts anything (the Kafka client security, the state store, the broker), so the line names the
dependency and its address; :func:`explain` turns any other start-up exception into such a line.

Exit codes: 2 for configuration (settings, routing, mapping files, unknown names), 1 for a
dependency that is down or a port in use.
"""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from ledgerflow.core.settings import ConfigError, Settings

__all__ = ["StartupFailure", "explain", "masked_url", "preflight", "settings_error"]


@dataclass
class StartupFailure(Exception):  # noqa: N818 - a failure the operator reads, not an error class
    """A start-up problem already described for the operator: ``message`` and the exit ``code``."""

    message: str
    code: int = 1

    def __str__(self) -> str:
        return self.message


def settings_error(exc: ValidationError) -> StartupFailure:
    """One message naming each invalid ``LEDGERFLOW_*`` setting (from a ``Settings()`` failure)."""
    parts = []
    for error in exc.errors():
        name = "_".join(str(p) for p in error["loc"]).upper()
        parts.append(f"LEDGERFLOW_{name}: {error['msg']}")
    return StartupFailure("invalid settings: " + "; ".join(parts), 2)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and ``config check``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown without its user-info part
        return url.split("@")[-1]


async def _check_state(settings: Settings, timeout: float) -> None:  # noqa: ASYNC109
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    shown = masked_url(settings.state_url)
    try:
        engine = create_async_engine(settings.state_url)
    except Exception as exc:  # SQLAlchemy's ArgumentError, a missing driver…
        raise StartupFailure(f"LEDGERFLOW_STATE_URL {shown} cannot be used: {exc}", 2) from exc
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError as exc:
        raise StartupFailure(f"state store {shown} did not answer within {timeout:g}s") from exc
    except Exception as exc:  # asyncpg, OSError, sqlite3: the cause is in the message
        cause = getattr(exc, "orig", None) or exc
        raise StartupFailure(f"cannot reach the state store {shown}: {type(cause).__name__}: {cause}") from exc
    finally:
        await engine.dispose()


async def _check_kafka(settings: Settings, bootstrap: str, timeout: float) -> None:  # noqa: ASYNC109
    from aiokafka.admin import AIOKafkaAdminClient

    from ledgerflow.core.kafka_security import kafka_client_options

    options = kafka_client_options(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **options)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            await admin.list_topics()
    except TimeoutError as exc:
        raise StartupFailure(
            f"Kafka at {bootstrap} did not answer within {timeout:g}s "
            f"(LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS; security protocol {settings.kafka_security_protocol})"
        ) from exc
    except Exception as exc:  # KafkaConnectionError, OSError, ssl errors
        raise StartupFailure(f"cannot reach Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from exc
    finally:
        await admin.close()


async def preflight(
    settings: Settings,
    *,
    kafka: str | None = None,
    state: bool = False,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds each dependency check
) -> None:
    """Check what a service needs before it starts: Kafka security settings, state store, broker.

    Args:
        settings: the process settings.
        kafka: bootstrap servers to check (None: no Kafka check).
        state: whether to check the state store (``LEDGERFLOW_STATE_URL``).
        timeout: seconds each dependency has to answer.

    Raises:
        StartupFailure: the first problem found, described in one line.

    """
    try:
        if kafka is not None:
            from ledgerflow.core.kafka_security import kafka_client_options

            kafka_client_options(settings)  # configuration errors first, before any network
        if state:
            await _check_state(settings, timeout)
        if kafka is not None:
            await _check_kafka(settings, kafka, timeout)
    except ConfigError as exc:
        raise StartupFailure(str(exc), 2) from exc


def explain(exc: BaseException) -> StartupFailure | None:
    """A one-line description of a start-up exception, or None when it is not a known kind."""
    from aiokafka.errors import KafkaError

    from ledgerflow.core.embedded import EmbeddedBrokerError

    if isinstance(exc, StartupFailure):
        return exc
    if isinstance(exc, ValidationError):
        return settings_error(exc)
    if isinstance(exc, ConfigError):
        return StartupFailure(f"configuration error: {exc}", 2)
    if isinstance(exc, EmbeddedBrokerError):
        return StartupFailure(f"embedded broker: {exc}")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return StartupFailure(f"{exc.strerror or exc}: another process listens there (choose another port)")
    if isinstance(exc, KafkaError):
        bootstrap = os.environ.get("LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS", "the embedded broker")
        return StartupFailure(f"Kafka ({bootstrap}): {type(exc).__name__}: {exc}")
    if isinstance(exc, ImportError):
        return StartupFailure(f"missing package: {exc}", 2)
    return None
