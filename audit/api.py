"""The sync-records API (FastAPI; OpenAPI document at ``/openapi.json``, docs at ``/docs``).

Modelled on Monite's accounting synced records (``GET /accounting_synced_records``, ``POST
/accounting_synced_records/{id}/push``) and Codat's push operations (``shared/reference/peers.md``):

``GET /sync-records``
    Filters ``tenant``, ``source``, ``object_type``, ``erp``, ``connection``, ``outcome``, and
    ``since``/``until`` on the last attempt time; cursor pagination (``limit`` ≤ 500, opaque
    ``cursor`` = the previous page's ``next_cursor``), newest record first, stable across pages.
``GET /sync-records/{id}``
    The record, every attempt with the ERP's answer (HTTP status, error code, message, vendor
    code) and the canonical record last published for it, bank numbers and tokens masked.
``POST /sync-records/{id}/retry``
    Re-drive a *failed* record to its ERP connection only: the latest canonical record is
    re-published on ``ledgerflow.<object>.v1`` with the header
    ``ledgerflow_target_connection: <connection>`` and a new event id derived from the failed
    attempt (so two clicks before the result arrives publish the same event, and the connector's
    idempotency key is the same). 202 with the event id; 404 unknown; 409 not failed, or the
    canonical record was never seen by the audit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, Field

from ledgerflow import __version__
from ledgerflow.audit.masking import mask_text, mask_tree
from ledgerflow.audit.store import AuditStore, InvalidCursorError, RecordFilter
from ledgerflow.audit.tables import SyncAttemptRow, SyncRecordRow
from ledgerflow.contracts import Outcome
from ledgerflow.core.events import deterministic_id
from ledgerflow.core.settings import Settings

__all__ = [
    "TARGET_CONNECTION_HEADER",
    "AttemptOut",
    "RetryAccepted",
    "SyncRecordDetail",
    "SyncRecordOut",
    "SyncRecordPage",
    "create_app",
    "retry_event_id",
]

TARGET_CONNECTION_HEADER = "ledgerflow_target_connection"
"""Header naming the only ERP connection that should book a re-driven canonical record."""
RETRY_OF_HEADER = "ledgerflow_retry_of"
"""Header carrying the event id of the failed attempt a retry re-drives."""

Publish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[Any]]


class SyncRecordOut(BaseModel):
    """One canonical record on one ERP connection (the latest state)."""

    id: str = Field(description="Sync record id (32 hex chars, stable for (canonical id, connection)).")
    canonical_id: str = Field(description="`<source>:<object>:<source id>`.")
    tenant: str = Field(description="Tenant.")
    source: str = Field(description="Source system.")
    object_type: str = Field(description="Canonical object type, e.g. `bill`.")
    erp: str = Field(description="ERP kind.")
    connection: str = Field(description="ERP connection name.")
    outcome: Outcome = Field(description="Outcome of the latest attempt.")
    operation: str = Field(description="Operation of the latest attempt (create, update, void, skip).")
    erp_record_id: str | None = Field(description="Id of the record in the ERP, once booked.")
    erp_record_version: str | None = Field(description="ERP version token (QuickBooks `SyncToken`).")
    amount: Decimal | None = Field(description="Document total, major units, as a decimal string.")
    currency: str | None = Field(description="ISO 4217 currency of `amount`.")
    first_attempt_at: datetime = Field(description="When the first attempt finished.")
    last_attempt_at: datetime = Field(description="When the latest attempt finished.")
    attempt_count: int = Field(description="Number of results received for this record.")
    retry_event_id: str | None = Field(description="Event id of the last retry requested through this API.")
    retry_requested_at: datetime | None = Field(description="When that retry was requested.")

    @classmethod
    def of(cls, row: SyncRecordRow) -> SyncRecordOut:
        """From a stored row."""
        return cls.model_validate(row, from_attributes=True)


class AttemptOut(BaseModel):
    """One attempt (one `SyncResult`) with the ERP's answer; messages masked."""

    result_event_id: str = Field(description="CloudEvents `ce_id` of the result message.")
    event_id: str = Field(description="`ce_id` of the canonical event handled.")
    operation: str = Field(description="Operation performed or attempted.")
    outcome: Outcome = Field(description="How it ended.")
    erp_record_id: str | None = Field(description="Id in the ERP.")
    http_attempts: int = Field(description="HTTP requests made for this attempt (retries included).")
    http_status: int | None = Field(description="Status of the ERP's last response.")
    error_code: str | None = Field(description="Stable error code, e.g. `erp.validation`.")
    error_message: str | None = Field(description="The ERP's message; bank numbers and tokens masked.")
    error_retriable: bool | None = Field(description="Whether retrying may help.")
    error_vendor_code: str | None = Field(description="The ERP's own error code.")
    accepted_at: datetime | None = Field(description="When the ingress accepted the webhook.")
    started_at: datetime = Field(description="When the connector started.")
    finished_at: datetime = Field(description="When it finished.")

    @classmethod
    def of(cls, row: SyncAttemptRow) -> AttemptOut:
        """From a stored row, masking the ERP's message."""
        out = cls.model_validate(row, from_attributes=True)
        if out.error_message is not None:
            out.error_message = mask_text(out.error_message)
        return out


class SyncRecordPage(BaseModel):
    """A page of sync records."""

    data: list[SyncRecordOut] = Field(description="Records, newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class SyncRecordDetail(SyncRecordOut):
    """A sync record with all its attempts and the canonical record last published for it."""

    attempts: list[AttemptOut] = Field(description="Every attempt, oldest first.")
    canonical_record: dict[str, Any] | None = Field(
        description="The latest canonical record JSON (masked), null when the audit has not seen it."
    )


class RetryAccepted(BaseModel):
    """A retry was published; its result will appear as a new attempt."""

    id: str = Field(description="Sync record id.")
    event_id: str = Field(description="`ce_id` of the re-published canonical event.")
    topic: str = Field(description="Topic it was published to.")
    connection: str = Field(description="The only connection that should book it.")


def retry_event_id(failed_event_id: str, record: SyncRecordRow) -> str:
    """Event id of a retry of ``record`` whose latest attempt handled ``failed_event_id``.

    Deterministic per (failed event, record, attempt count): retries requested twice before a new
    result arrives publish the same event, so the connector's idempotency key stays the same.
    """
    return deterministic_id(failed_event_id, "retry", record.id, str(record.attempt_count))


RecordId = Annotated[str, Path(description="Sync record id.", max_length=64)]


def create_app(store: AuditStore, publish: Publish, settings: Settings) -> FastAPI:
    """The sync-records API over ``store``; ``publish(topic, key, value, headers)`` re-publishes retries.

    Returns:
        A FastAPI app (OpenAPI at ``/openapi.json``).
    """
    app = FastAPI(
        title="ledgerflow sync records",
        version=__version__,
        description="Every attempt to book a canonical record into an ERP connection, and retries of failed ones.",
    )
    topics = settings.topics

    @app.get("/sync-records", summary="List sync records")
    async def list_sync_records(
        tenant: Annotated[str | None, Query(description="Tenant.")] = None,
        source: Annotated[str | None, Query(description="Source system, e.g. `mercoa`.")] = None,
        object_type: Annotated[str | None, Query(description="Canonical object type, e.g. `bill`.")] = None,
        erp: Annotated[str | None, Query(description="ERP kind, e.g. `quickbooks`.")] = None,
        connection: Annotated[str | None, Query(description="ERP connection name.")] = None,
        outcome: Annotated[Outcome | None, Query(description="Latest outcome.")] = None,
        since: Annotated[datetime | None, Query(description="Last attempt at or after (ISO 8601).")] = None,
        until: Annotated[datetime | None, Query(description="Last attempt before (ISO 8601).")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    ) -> SyncRecordPage:
        """Sync records matching every given filter, newest first, one page at a time."""
        filters = RecordFilter(
            tenant=tenant,
            source=source,
            object_type=object_type,
            erp=erp,
            connection=connection,
            outcome=outcome.value if outcome else None,
            since=since,
            until=until,
        )
        try:
            page = await store.list_records(filters, limit=limit, cursor=cursor)
        except InvalidCursorError as exc:
            raise HTTPException(400, str(exc)) from None
        return SyncRecordPage(data=[SyncRecordOut.of(r) for r in page.records], next_cursor=page.next_cursor)

    @app.get("/sync-records/{record_id}", summary="Get one sync record", responses={404: {"description": "Unknown"}})
    async def get_sync_record(record_id: RecordId) -> SyncRecordDetail:
        """The record, all its attempts with the ERP's answers, and its canonical record (masked)."""
        found = await store.get_record(record_id)
        if found is None:
            raise HTTPException(404, f"no sync record {record_id}")
        row, attempts = found
        canonical = await store.get_canonical(row.canonical_id)
        return SyncRecordDetail(
            **SyncRecordOut.of(row).model_dump(),
            attempts=[AttemptOut.of(a) for a in attempts],
            canonical_record=mask_tree(orjson.loads(canonical.body)) if canonical else None,
        )

    @app.post(
        "/sync-records/{record_id}/retry",
        status_code=202,
        summary="Re-drive a failed record to its ERP connection",
        responses={404: {"description": "Unknown record"}, 409: {"description": "Not failed, or not retriable"}},
    )
    async def retry_sync_record(record_id: RecordId) -> RetryAccepted:
        """Re-publish the latest canonical record for this record's connection only."""
        found = await store.get_record(record_id)
        if found is None:
            raise HTTPException(404, f"no sync record {record_id}")
        row, attempts = found
        if row.outcome != Outcome.FAILED.value:
            raise HTTPException(409, f"sync record {record_id} is {row.outcome}, only failed records are retried")
        canonical = await store.get_canonical(row.canonical_id)
        if canonical is None:
            raise HTTPException(409, f"the audit has not seen the canonical record {row.canonical_id}; replay it")
        failed_event = attempts[-1].event_id if attempts else row.last_event_id
        event_id = retry_event_id(failed_event, row)
        headers = {k: v for k, v in canonical.headers.items() if not k.startswith("ledgerflow_")}
        headers.update({"ce_id": event_id, TARGET_CONNECTION_HEADER: row.connection, RETRY_OF_HEADER: failed_event})
        topic = topics.canonical(canonical.object_type)
        await publish(topic, canonical.canonical_id.encode(), canonical.body, headers)
        await store.mark_retry(row.id, event_id)
        return RetryAccepted(id=row.id, event_id=event_id, topic=topic, connection=row.connection)

    return app
