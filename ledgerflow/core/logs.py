"""Structured logs: structlog, with the standard library's logging routed through it.

Every line is one JSON object (``LEDGERFLOW_LOG_FORMAT=json``, the default when stderr is not a
terminal) or a readable line (``console``), with ``timestamp`` (UTC, ISO 8601), ``level``,
``logger``, ``event`` and the record's context: ``tenant``, ``source``, ``event_id``,
``connection``, ``attempt`` — bound with :func:`log_context` where a webhook or a record is being
handled, and added to every line logged inside it, by ledgerflow or by a library.

Two guards keep logs useful under failure:

* :class:`RepeatLimiter` lets the same message template of one logger through at most ``burst``
  times per ``window`` seconds, then counts what it dropped and says so once the window ends, so a
  broker outage logs a bounded number of lines instead of one per reconnect attempt;
* :func:`redact_secrets` masks ``Bearer`` tokens, passwords and secrets in any field.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import structlog

__all__ = ["RepeatLimiter", "configure_logging", "log_context", "redact_secrets"]

LogFormat = Literal["auto", "json", "console"]

_SECRET = re.compile(
    r"(?i)((?:bearer|basic)\s+|(?:password|passwd|secret|token|api[_-]?key|authorization)[\"']?\s*[=:]\s*[\"']?"
    r"(?:(?:bearer|basic)\s+)?)([^\s\"',;&]+)"
)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: mask the value after ``Bearer``/``password=``/``token:``… in every string field."""
    for key, value in event_dict.items():
        if isinstance(value, str) and _SECRET.search(value):
            event_dict[key] = _SECRET.sub(lambda m: m.group(1) + "***", value)
    return event_dict


class RepeatLimiter(logging.Filter):
    """Let one logger's same message template through ``burst`` times per ``window`` seconds.

    What is dropped is counted; the first line after the window says how many were suppressed
    (``suppressed`` field). Templates (``record.msg``), not formatted text, are compared, so a
    reconnect loop whose message differs only in its arguments is one template. Loggers under
    ``exempt`` (the ingress's line per refused webhook) are never limited.
    """

    def __init__(
        self,
        burst: int = 5,
        window: float = 60.0,
        clock: Any = time.monotonic,
        exempt: tuple[str, ...] = ("ledgerflow.ingress.webhooks",),
    ) -> None:
        super().__init__()
        self.exempt = exempt
        self.burst = burst
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is logged (may add ``suppressed`` to it)."""
        if record.name.startswith(self.exempt):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        start, count, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self.window:
            if dropped:
                record.suppressed = dropped
            self._seen[key] = (now, 1, 0)
            return True
        if count < self.burst:
            self._seen[key] = (start, count + 1, dropped)
            return True
        self._seen[key] = (start, count, dropped + 1)
        if len(self._seen) > 10_000:  # a bounded memory even with ever-new templates
            self._seen.clear()
        return False


def _add_suppressed(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None and getattr(record, "suppressed", None):
        event_dict["suppressed"] = record.suppressed
    return event_dict


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto", *, quiet: bool = False, stream: Any = None) -> None:
    """Route every log line (ledgerflow's, FastStream's, aiokafka's, uvicorn's) through structlog.

    Args:
        level: the root level name (``LEDGERFLOW_LOG_LEVEL``).
        fmt: ``json``, ``console``, or ``auto`` (JSON unless ``stream`` is a terminal).
        quiet: only warnings and above (the demo's table stays readable).
        stream: where lines go (stderr by default).

    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_suppressed,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.WARNING if quiet else getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    # FastStream logs every message at INFO and aiokafka every reconnect; keep them to warnings
    # unless DEBUG was asked for.
    for noisy in ("faststream", "aiokafka", "ledgerflow.core.kafka.messages", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # HTTP/2 header compression logs every header it encodes (Authorization included) at DEBUG.
    logging.getLogger("hpack").setLevel(logging.WARNING)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (tenant, source, event_id, connection, attempt…) to every line logged inside.

    None values are left out. Context variables follow asyncio tasks started inside the block.
    """
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
        yield
