"""Helpers of the audit tests: a SyncResult factory and the reference time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import ErrorInfo, Operation, Outcome, SyncResult

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

MakeResult = Callable[..., SyncResult]


def make_result(
    n: int,
    *,
    connection: str = "qbo-main",
    erp: str = "quickbooks",
    tenant: str = "acme",
    source: str = "mercoa",
    object_type: str = "bill",
    outcome: Outcome = Outcome.SUCCEEDED,
    minutes: float = 0,
    event_id: str | None = None,
    **fields: Any,
) -> SyncResult:
    """A SyncResult for bill ``n`` on ``connection``, finished ``minutes`` after :data:`T0`."""
    finished = T0 + timedelta(minutes=minutes)
    failed = outcome is Outcome.FAILED
    defaults: dict[str, Any] = {
        "event_id": event_id or f"evt-{n}-{minutes}",
        "canonical_id": f"{source}:{object_type}:in_{n}",
        "object_type": object_type,
        "tenant": tenant,
        "source": source,
        "erp": erp,
        "connection": connection,
        "operation": Operation.CREATE,
        "outcome": outcome,
        "erp_record_id": None if failed else f"{100 + n}",
        "attempts": 1,
        "http_status": 400 if failed else 200,
        "error": ErrorInfo(code="erp.validation", message="Vendor not found", retriable=False) if failed else None,
        "amount": Decimal("1234.56"),
        "currency": "USD",
        "accepted_at": finished - timedelta(seconds=2),
        "started_at": finished - timedelta(seconds=1),
        "finished_at": finished,
    }
    defaults.update(fields)
    return SyncResult(**defaults)
