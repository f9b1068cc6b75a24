"""What an operator can do to the pipeline from the audit service: re-drive records, replay dead letters.

Shared by the sync-records API and the console, so both give the same guarantees:

* **re-drive** (:meth:`Operations.redrive`) re-publishes the latest canonical record of a
  *failed* sync record on ``ledgerflow.<object>.v1`` for **its connection only**
  (``ledgerflow_target_connection``), with an event id derived from the failed attempt and the
  attempt count (:func:`retry_event_id`): asking twice before the new result arrives publishes
  the same event, so the connector's idempotency key is the same and the ERP books once;
* **replay** (:meth:`Operations.replay`) re-publishes stored dead letters to their original
  topics exactly as ``ledgerflow replay dlq`` does (:mod:`ledgerflow.core.deadletters`): same key,
  value and CloudEvents headers (same ``ce_id``), ``ledgerflow_dlq_*`` headers dropped,
  ``ledgerflow_replayed_from`` added, in the order they were dead-lettered per partition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from ledgerflow.audit.store import AuditStore
from ledgerflow.audit.tables import DeadLetterRow, SyncRecordRow
from ledgerflow.contracts import Outcome
from ledgerflow.contracts import headers as wire
from ledgerflow.contracts.events import deterministic_id
from ledgerflow.contracts.topics import Topics
from ledgerflow.core import metrics
from ledgerflow.core.deadletters import replay_headers
from ledgerflow.core.problems import Problem

__all__ = [
    "RETRY_OF_HEADER",
    "TARGET_CONNECTION_HEADER",
    "Operations",
    "Publish",
    "Redriven",
    "Replayed",
    "retry_event_id",
]

TARGET_CONNECTION_HEADER = wire.TARGET_CONNECTION
"""Header naming the only ERP connection that should book a re-driven canonical record."""
RETRY_OF_HEADER = wire.RETRY_OF
"""Header carrying the event id of the failed attempt a retry re-drives."""

Publish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]
"""``publish(topic, key, value, headers)``: returns once the broker acknowledged the write."""


def retry_event_id(failed_event_id: str, record: SyncRecordRow) -> str:
    """Event id of a retry of ``record`` whose latest attempt handled ``failed_event_id``.

    Deterministic per (failed event, record, attempt count): retries requested twice before a new
    result arrives publish the same event, so the connector's idempotency key stays the same.
    """
    return deterministic_id(failed_event_id, "retry", record.id, str(record.attempt_count))


@dataclass(frozen=True, slots=True)
class Redriven:
    """A re-drive that was published: the record, the new event id, its topic and connection."""

    id: str
    event_id: str
    topic: str
    connection: str


@dataclass(slots=True)
class Replayed:
    """Dead letters replayed (or, in a dry run, that would be) and those that cannot be routed back."""

    dry_run: bool
    replayed: list[DeadLetterRow] = field(default_factory=list)
    skipped: list[DeadLetterRow] = field(default_factory=list)


class Operations:
    """Re-drives and replays over ``store``, publishing through ``publish``.

    Args:
        store: the audit store.
        publish: writes one message and waits for the broker's acknowledgement.
        topics: topic names (the prefix).
    """

    def __init__(self, store: AuditStore, publish: Publish, topics: Topics) -> None:
        self.store = store
        self.publish = publish
        self.topics = topics

    async def _publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        try:
            await self.publish(topic, key, value, headers)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise Problem(
                503,
                "broker-unavailable",
                "Broker unavailable",
                f"the broker did not acknowledge the write to {topic}: {type(exc).__name__}",
                headers={"Retry-After": "5"},
            ) from None

    async def redrive(self, record_id: str, *, visible: Callable[[str], bool]) -> Redriven:
        """Re-drive failed sync record ``record_id`` to its connection.

        Args:
            record_id: the sync record.
            visible: whether the caller may see a tenant (else the record answers 404).

        Raises:
            Problem: 404 unknown (or not visible), 409 not failed or canonical record never seen.
            Problem: 503 when the broker did not acknowledge (nothing is marked).
        """
        found = await self.store.get_record(record_id)
        if found is None or not visible(found[0].tenant):
            raise Problem(404, "not-found", "Not found", f"no sync record {record_id}")
        row, attempts = found
        if row.outcome != Outcome.FAILED.value:
            raise Problem(
                409,
                "not-failed",
                "Not failed",
                f"sync record {record_id} is {row.outcome}; only failed records are re-driven",
            )
        canonical = await self.store.get_canonical(row.canonical_id, tenant=row.tenant)
        if canonical is None:
            raise Problem(
                409,
                "canonical-record-unknown",
                "Canonical record unknown",
                f"the audit has not seen the canonical record {row.canonical_id}; replay its raw events",
            )
        failed_event = attempts[-1].event_id if attempts else row.last_event_id
        event_id = retry_event_id(failed_event, row)
        headers = {k: v for k, v in canonical.headers.items() if not k.startswith(wire.LEDGERFLOW_PREFIX)}
        headers.update({wire.CE_ID: event_id, TARGET_CONNECTION_HEADER: row.connection, RETRY_OF_HEADER: failed_event})
        topic = self.topics.canonical(canonical.object_type)
        await self._publish(topic, canonical.canonical_id.encode(), canonical.body, headers)
        await self.store.mark_retry(row.id, event_id)
        metrics.REDRIVES.labels(row.tenant, row.connection).inc()
        return Redriven(id=row.id, event_id=event_id, topic=topic, connection=row.connection)

    async def replay(self, letters: Sequence[DeadLetterRow], *, dry_run: bool = False) -> Replayed:
        """Replay ``letters`` (in the order given) to their original topics; count each replay.

        A dead letter without an original topic is skipped (it cannot be routed back).

        Raises:
            Problem: 503 when the broker did not acknowledge a write; those already written stay counted.
        """
        done = Replayed(dry_run=dry_run)
        for letter in letters:
            if not letter.original_topic:
                done.skipped.append(letter)
                continue
            if not dry_run:
                headers = replay_headers(
                    ((k, v.encode()) for k, v in letter.headers.items()), letter.topic, letter.partition, letter.offset
                )
                await self._publish(
                    letter.original_topic, letter.key, letter.value, {k: v.decode() for k, v in headers}
                )
                await self.store.mark_replayed([letter.id])
                metrics.DEAD_LETTER_REPLAYS.labels(letter.stage).inc()
            done.replayed.append(letter)
        return done
