"""Dead letters: their headers, how to read them, and how a replay rewrites them.

One definition for everything that replays dead letters — ``ledgerflow replay dlq`` (reading the
``ledgerflow.dlq.<stage>`` topics) and the audit service's ``POST /v1/dead-letters/…/replay``
(replaying what it stored from those topics) — so both keep the same guarantees:

* the message goes back to ``ledgerflow_dlq_original_topic`` with its key, value and CloudEvents
  headers unchanged (same ``ce_id``: later stages recognise work already done);
* the ``ledgerflow_dlq_*`` headers are dropped and ``ledgerflow_replayed_from:
  <topic>:<partition>:<offset>`` (where the dead letter was read) is added;
* a dead letter without an original topic cannot be routed back and is not replayed.

The headers themselves are written by :func:`ledgerflow.core.delivery.dead_letter_headers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ledgerflow.contracts import headers as h
from ledgerflow.contracts.topics import STAGES

__all__ = [
    "DLQ_HEADER_PREFIX",
    "REPLAYED_FROM_HEADER",
    "DeadLetterFilter",
    "DeadLetterInfo",
    "replay_headers",
]

DLQ_HEADER_PREFIX = h.DLQ_PREFIX
"""Prefix of the headers a stage adds when it dead-letters a message (dropped on replay)."""
REPLAYED_FROM_HEADER = h.REPLAYED_FROM
"""Header added to every replayed message: ``<topic>:<partition>:<offset>`` it was read from."""


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to replay or list; empty / None fields match everything.

    ``since`` is inclusive and ``until`` exclusive, both compared with the dead letter's Kafka
    timestamp (when it was dead-lettered).
    """

    stages: Sequence[str] = STAGES
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    reasons: Sequence[str] = ()

    def unknown_stages(self) -> list[str]:
        """Stages of this filter that are not pipeline stages (:data:`~ledgerflow.contracts.topics.STAGES`)."""
        return [s for s in self.stages if s not in STAGES]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """What the ``ledgerflow_dlq_*`` and CloudEvents headers of a dead letter say.

    ``stage`` falls back to the one named by the topic when the header is missing; ``reason`` to
    ``unknown``. ``trace_id`` is the trace id of the W3C ``traceparent`` (32 hex chars).
    """

    stage: str | None
    reason: str
    detail: str
    attempts: int | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    tenant: str | None
    event_id: str | None
    event_type: str | None
    trace_id: str | None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> DeadLetterInfo:
        """Read the dead-letter headers (decoded to text) of one message."""
        traceparent = headers.get(h.TRACEPARENT, "")
        parts = traceparent.split("-")
        trace_id = parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
        return cls(
            stage=headers.get(h.DLQ_STAGE),
            reason=headers.get(h.DLQ_REASON) or "unknown",
            detail=headers.get(h.DLQ_DETAIL, ""),
            attempts=_int(headers.get(h.DLQ_ATTEMPTS)),
            original_topic=headers.get(h.DLQ_ORIGINAL_TOPIC) or None,
            original_partition=_int(headers.get(h.DLQ_ORIGINAL_PARTITION)),
            original_offset=_int(headers.get(h.DLQ_ORIGINAL_OFFSET)),
            tenant=headers.get(h.CE_TENANT),
            event_id=headers.get(h.CE_ID),
            event_type=headers.get(h.CE_TYPE),
            trace_id=trace_id,
        )


def replay_headers(
    headers: Iterable[tuple[str, bytes]], topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The headers a dead letter read at ``topic``/``partition``/``offset`` is replayed with.

    Every header is kept except the ``ledgerflow_dlq_*`` ones and an earlier replay's
    ``ledgerflow_replayed_from``; ``ledgerflow_replayed_from: <topic>:<partition>:<offset>`` is added.
    """
    kept = [(k, v) for k, v in headers if not k.startswith(DLQ_HEADER_PREFIX) and k != REPLAYED_FROM_HEADER]
    kept.append((REPLAYED_FROM_HEADER, f"{topic}:{partition}:{offset}".encode()))
    return kept
