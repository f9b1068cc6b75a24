"""Control totals: what was accepted from the sources against what the ERPs booked, per connection.

What an accountant checks at period end. For one tenant and a period (documents the audit
received in ``[since, until)``), per ERP connection, object type and currency:

* **accepted** — canonical documents accepted from the source (the latest version of each; voids
  and deletes left out), with the sum of their totals (payments: their amount), in the
  document currency, ``Decimal``;
* **booked** — those whose latest result on the connection is ``succeeded`` or ``duplicate``
  (read-back verification has confirmed the ERP holds the source's figures);
* **skipped** — the connection does not take them (object not configured, not approved…), with
  the reason;
* **failed** — the latest result failed (``erp.mismatch`` when the ERP holds something else);
* **pending** — no result yet on a connection that takes the object type;
* **difference** — accepted − booked − skipped: what should be in the ERP and is not (failed +
  pending). Zero means the books agree with the sources; otherwise every document in it is
  listed with its outcome and reason.

Dead letters of the tenant in the period (records that never reached a connection) are counted
per stage next to the totals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerflow.audit.store import AuditStore
from ledgerflow.audit.tables import CanonicalRecordRow, DeadLetterRow, SyncAttemptRow, SyncRecordRow

__all__ = ["Bucket", "ControlTotal", "Reconciliation", "Unbooked", "reconcile"]

_BOOKED = frozenset({"succeeded", "duplicate"})


@dataclass
class Bucket:
    """A number of documents and the sum of their amounts (document currency, major units)."""

    count: int = 0
    amount: Decimal = Decimal(0)

    def add(self, amount: Decimal) -> None:
        """Count one document of ``amount``."""
        self.count += 1
        self.amount += amount

    def as_json(self) -> dict[str, Any]:
        """``{"count": n, "amount": "123.45"}`` (amount as a decimal string)."""
        return {"count": self.count, "amount": format(self.amount, "f")}


@dataclass(frozen=True, slots=True)
class Unbooked:
    """A document in the difference (or skipped): its outcome and why."""

    canonical_id: str
    outcome: str
    amount: Decimal
    code: str | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        """JSON shape (amount as a decimal string)."""
        return {
            "canonical_id": self.canonical_id,
            "outcome": self.outcome,
            "amount": format(self.amount, "f"),
            "code": self.code,
            "reason": self.reason,
        }


@dataclass
class ControlTotal:
    """Control totals of one (connection, object type, currency)."""

    connection: str
    erp: str | None
    object_type: str
    currency: str
    accepted: Bucket = field(default_factory=Bucket)
    booked: Bucket = field(default_factory=Bucket)
    skipped: Bucket = field(default_factory=Bucket)
    failed: Bucket = field(default_factory=Bucket)
    pending: Bucket = field(default_factory=Bucket)
    unbooked: list[Unbooked] = field(default_factory=list)

    @property
    def difference(self) -> Bucket:
        """Accepted − booked − skipped (= failed + pending)."""
        return Bucket(
            self.accepted.count - self.booked.count - self.skipped.count,
            self.accepted.amount - self.booked.amount - self.skipped.amount,
        )

    def as_json(self) -> dict[str, Any]:
        """JSON shape of the row."""
        return {
            "connection": self.connection,
            "erp": self.erp,
            "object_type": self.object_type,
            "currency": self.currency,
            "accepted": self.accepted.as_json(),
            "booked": self.booked.as_json(),
            "skipped": self.skipped.as_json(),
            "failed": self.failed.as_json(),
            "pending": self.pending.as_json(),
            "difference": self.difference.as_json(),
            "unbooked": [u.as_json() for u in self.unbooked],
        }


@dataclass
class Reconciliation:
    """The control totals of a tenant over a period."""

    tenant: str
    since: datetime
    until: datetime | None
    totals: list[ControlTotal]
    dead_letters: dict[str, int]

    @property
    def balanced(self) -> bool:
        """Whether every row's difference is zero (count and amount)."""
        return all(t.difference.count == 0 and t.difference.amount == 0 for t in self.totals)

    def as_json(self) -> dict[str, Any]:
        """JSON shape (``ledgerflow reconcile --json``, the sync-records API)."""
        return {
            "tenant": self.tenant,
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "balanced": self.balanced,
            "totals": [t.as_json() for t in self.totals],
            "dead_letters": self.dead_letters,
        }


def _figure(body: Mapping[str, Any]) -> tuple[Decimal, str] | None:
    """The document's amount and currency (``total``, else ``amount``), or None for records without money."""
    raw = body.get("total", body.get("amount"))
    currency = body.get("currency")
    if raw is None or not isinstance(currency, str):
        return None
    return Decimal(str(raw)), currency


async def reconcile(
    store: AuditStore,
    *,
    tenant: str,
    since: datetime,
    until: datetime | None = None,
    connection: str | None = None,
    routes: Mapping[str, Sequence[str]] | None = None,
) -> Reconciliation:
    """Compute the control totals of ``tenant`` for documents received in ``[since, until)``.

    Args:
        store: the audit store.
        tenant: the tenant.
        since: start of the period (inclusive), compared with when the audit received the document.
        until: end of the period (exclusive); None = now.
        connection: only this ERP connection.
        routes: connection → the object types it takes (from the routing file), to find documents
            still *pending* on a connection that has no result for them. Without it a connection
            counts as taking the object types it has results for.

    Returns:
        One :class:`ControlTotal` per (connection, object type, currency), sorted.
    """
    conditions = [CanonicalRecordRow.tenant == tenant, CanonicalRecordRow.recorded_at >= since]
    if until is not None:
        conditions.append(CanonicalRecordRow.recorded_at < until)
    documents: dict[str, tuple[str, Decimal, str]] = {}
    async with AsyncSession(store.engine) as session:
        for canonical_id, object_type, body in (
            await session.execute(
                select(CanonicalRecordRow.canonical_id, CanonicalRecordRow.object_type, CanonicalRecordRow.body).where(
                    *conditions
                )
            )
        ).all():
            parsed = orjson.loads(body)
            figure = _figure(parsed) if isinstance(parsed, dict) else None
            if figure is None or parsed.get("action", "upsert") != "upsert":
                continue
            documents[canonical_id] = (object_type, figure[0], figure[1])
        record_conditions = [SyncRecordRow.tenant == tenant, SyncRecordRow.canonical_id.in_(list(documents))]
        if connection is not None:
            record_conditions.append(SyncRecordRow.connection == connection)
        records = (
            (
                await session.execute(
                    select(
                        SyncRecordRow.id,
                        SyncRecordRow.canonical_id,
                        SyncRecordRow.connection,
                        SyncRecordRow.erp,
                        SyncRecordRow.outcome,
                    ).where(*record_conditions)
                )
            ).all()
            if documents
            else []
        )
        reasons: dict[str, tuple[str | None, str | None]] = {}
        open_ids = [r.id for r in records if r.outcome not in _BOOKED]
        if open_ids:
            latest = (
                select(SyncAttemptRow.sync_record_id, SyncAttemptRow.error_code, SyncAttemptRow.error_message)
                .where(SyncAttemptRow.sync_record_id.in_(open_ids))
                .order_by(SyncAttemptRow.finished_at)
            )
            for record_id, code, message in (await session.execute(latest)).all():
                reasons[record_id] = (code, message)  # ordered by time: the last one wins
        dl_conditions = [DeadLetterRow.tenant == tenant, DeadLetterRow.dead_lettered_at >= since]
        if until is not None:
            dl_conditions.append(DeadLetterRow.dead_lettered_at < until)
        dead = {
            stage: int(n)
            for stage, n in (
                await session.execute(
                    select(DeadLetterRow.stage, func.count()).where(*dl_conditions).group_by(DeadLetterRow.stage)
                )
            ).all()
        }
    totals: dict[tuple[str, str, str], ControlTotal] = {}
    erps: dict[str, str] = {}
    taken: dict[str, set[str]] = {c: set(objects) for c, objects in (routes or {}).items()}
    if connection is not None:
        taken = {c: o for c, o in taken.items() if c == connection}
    seen: set[tuple[str, str]] = set()

    def row(conn: str, object_type: str, currency: str) -> ControlTotal:
        key = (conn, object_type, currency)
        if key not in totals:
            totals[key] = ControlTotal(conn, erps.get(conn), object_type, currency)
        return totals[key]

    for record in records:
        erps[record.connection] = record.erp
        if routes is None:
            taken.setdefault(record.connection, set())
        object_type, amount, currency = documents[record.canonical_id]
        if routes is None:
            taken[record.connection].add(object_type)
        seen.add((record.canonical_id, record.connection))
        total = row(record.connection, object_type, currency)
        total.accepted.add(amount)
        if record.outcome in _BOOKED:
            total.booked.add(amount)
            continue
        code, message = reasons.get(record.id, (None, None))
        (total.skipped if record.outcome == "skipped" else total.failed).add(amount)
        total.unbooked.append(Unbooked(record.canonical_id, record.outcome, amount, code, message))
    for canonical_id, (object_type, amount, currency) in documents.items():
        for conn, objects in taken.items():
            if object_type in objects and (canonical_id, conn) not in seen:
                total = row(conn, object_type, currency)
                total.accepted.add(amount)
                total.pending.add(amount)
                total.unbooked.append(Unbooked(canonical_id, "pending", amount, None, "no result from the ERP yet"))
    for total in totals.values():
        total.erp = total.erp or erps.get(total.connection)
        total.unbooked.sort(key=lambda u: u.canonical_id)
    return Reconciliation(
        tenant=tenant,
        since=since,
        until=until,
        totals=[totals[k] for k in sorted(totals)],
        dead_letters=dead,
    )
