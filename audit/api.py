"""The sync-records API, version 1 (FastAPI; OpenAPI document at ``/v1/openapi.json``).

Modelled on Monite's accounting synced records (``GET /accounting_synced_records``, ``POST
/accounting_synced_records/{id}/push``) and Codat's push operations (``shared/reference/peers.md``).
Every request authenticates (:mod:`ledgerflow.audit.auth`: ``Authorization: Bearer <API key or
OIDC token>``); scopes ``read``, ``redrive`` and ``admin``; anything of a tenant the caller may
not see answers 404. Every error is RFC 9457 ``application/problem+json``
(:mod:`ledgerflow.core.problems`) and documented as such.

``GET /v1/sync-records`` (read)
    Filters ``tenant``, ``source``, ``object_type``, ``erp``, ``connection``, ``outcome``, ``direction``,
    ``since``/``until`` on the last attempt time, ``q`` (source id, document number, event id);
    cursor pagination, newest first, stable across pages. ``GET /v1/sync-records/counts``: per outcome.
``GET /v1/sync-records/{id}`` (read)
    The record, every attempt (time, outcome, HTTP status, the ERP's answer masked, read-back
    differences, trace id) and the canonical record last published for it, masked.
``POST /v1/sync-records/{id}/retry`` and ``POST /v1/sync-records/retry`` (redrive)
    Re-drive one failed record, or a page of the failed records matching a filter, to its ERP
    connection only (:class:`ledgerflow.audit.operations.Operations`).
``GET /v1/dead-letters[/{id}]`` (read), ``POST /v1/dead-letters[/{id}]/replay`` (redrive)
    Dead letters of every stage with stage, reason and detail; replayed like ``ledgerflow replay dlq``.
``GET /v1/reconciliation?tenant=…&since=…[&until=…][&connection=…]`` (read)
    Control totals (:mod:`ledgerflow.audit.reconcile`): accepted, booked, skipped, failed, pending
    and the difference per connection, object type and currency, with every unbooked document.
``GET /v1/connections`` (read)
    Health, last success and error rate of each ERP connection.
``POST|GET /v1/connections/{name}/reference-sync[/{id}]`` (redrive, read)
    Run a connection's reference sync now; its last runs (:mod:`ledgerflow.audit.reference_sync_api`).
``GET /v1/mappings``, ``PUT|DELETE /v1/mappings/{tenant}/{connection}/{kind}/{source_code}`` (read / admin)
    Source code → ERP id tables per tenant and connection (:mod:`ledgerflow.audit.mappings_api`).
``GET|POST /v1/keys``, ``DELETE /v1/keys/{id}`` (admin)
    API keys (the secret is shown once, at creation).
``/v1/stored-connections…`` (read; admin to change), ``GET /oauth/callback`` (public)
    ERP connections kept in the state store and the OAuth consent of QuickBooks and Xero
    (:mod:`ledgerflow.audit.connections_api`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import httpx
import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledgerflow import __version__
from ledgerflow.audit.auth import ALL_TENANTS, SCOPES, Authenticator, Principal, forbidden
from ledgerflow.audit.connections_api import install_connections
from ledgerflow.audit.mappings_api import mappings_router
from ledgerflow.audit.masking import mask_text, mask_tree
from ledgerflow.audit.operations import (
    RETRY_OF_HEADER,
    TARGET_CONNECTION_HEADER,
    Operations,
    Publish,
    retry_event_id,
)
from ledgerflow.audit.reconcile import reconcile
from ledgerflow.audit.store import (
    AuditStore,
    ConnectionHealth,
    DeadLetterFilter,
    InvalidCursorError,
    RecordFilter,
)
from ledgerflow.audit.tables import ApiKeyRow, DeadLetterRow, SyncAttemptRow, SyncRecordRow
from ledgerflow.contracts import Outcome
from ledgerflow.contracts.sync_result import Direction
from ledgerflow.contracts.topics import STAGES
from ledgerflow.core.connections import ConnectionCheck
from ledgerflow.core.mapping_targets import KindsOf, MappingTargetProblem, mapping_routing, target_problem
from ledgerflow.core.problems import PROBLEM_SCHEMA, Problem, problem_doc, problem_response
from ledgerflow.core.reference_runs import ReferenceRuns
from ledgerflow.core.settings import ConfigError, Settings
from ledgerflow.core.state import StateStore

__all__ = [
    "API_PREFIX",
    "RETRY_OF_HEADER",
    "TARGET_CONNECTION_HEADER",
    "AttemptOut",
    "DeadLetterOut",
    "RetryAccepted",
    "SyncRecordDetail",
    "SyncRecordOut",
    "SyncRecordPage",
    "create_app",
    "install_problem_handlers",
    "retry_event_id",
]

API_PREFIX = "/v1"
"""Prefix of every API path (the version)."""

Readiness = Callable[[], Awaitable[str | None]]

_TEXT = r"^[^\x00-\x1f\x7f]*$"
"""Filters and ids are printable text: control characters (NUL…) are refused with a 400 problem."""

Text = Annotated[str, Field(max_length=200, pattern=_TEXT)]


def _text(description: str) -> Any:
    """A text query parameter: at most 200 printable characters."""
    return Query(max_length=200, pattern=_TEXT, description=description)


StageName = Literal["ingress", "transform", "connector", "writeback", "audit"]
assert set(StageName.__args__) == set(STAGES)  # type: ignore[attr-defined]


class SyncRecordOut(BaseModel):
    """One canonical record on one ERP connection (the latest state)."""

    id: str = Field(description="Sync record id (32 hex chars, stable for (canonical id, connection)).")
    canonical_id: str = Field(description="`<tenant>:<source>:<object>:<source id>`.")
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
    attempt_count: int = Field(description="Number of attempts (results) received for this record.")
    retry_event_id: str | None = Field(description="Event id of the last re-drive requested through this API.")
    retry_requested_at: datetime | None = Field(description="When that re-drive was requested.")
    direction: Direction = Field(
        "outbound", description="`outbound`: booked into the ERP; `inbound`: read from it, written into a source."
    )
    source_record_id: str | None = Field(None, description="Inbound: the record's id in the source written to.")

    @classmethod
    def of(cls, row: SyncRecordRow) -> SyncRecordOut:
        """From a stored row."""
        return cls.model_validate(row, from_attributes=True)


_ERROR_FIELDS = frozenset({"code", "message", "retriable", "vendor_code", "differences"})


class DifferenceOut(BaseModel):
    """One field where the ERP's record differs from the source document (read-back verification)."""

    field: str = Field(description="Canonical field, e.g. `total`, `line[2].amount`.")
    expected: str = Field(description="The source document's value.")
    actual: str = Field(description="The ERP record's value.")


class AttemptOut(BaseModel):
    """One attempt (one `SyncResult`) with the ERP's answer; messages and details masked."""

    result_event_id: str = Field(description="CloudEvents `ce_id` of the result message.")
    event_id: str = Field(description="`ce_id` of the canonical event handled.")
    operation: str = Field(description="Operation performed or attempted.")
    outcome: Outcome = Field(description="How it ended.")
    erp_record_id: str | None = Field(description="Id in the ERP.")
    http_attempts: int = Field(description="HTTP requests made for this attempt (in-place retries included).")
    http_status: int | None = Field(description="Status of the ERP's last response.")
    error_code: str | None = Field(description="Stable error code, e.g. `erp.validation`, `erp.mismatch`.")
    error_message: str | None = Field(description="The ERP's answer; bank numbers and tokens masked.")
    error_retriable: bool | None = Field(description="Whether retrying may help.")
    error_vendor_code: str | None = Field(description="The ERP's own error code.")
    differences: list[DifferenceOut] | None = Field(
        None,
        description="Read-back differences (`erp.mismatch`): where the ERP's stored record differs from "
        "the source document, masked.",
    )
    error_details: dict[str, Any] | None = Field(
        None, description="Anything else the connector attached to the error, masked."
    )
    trace_id: str | None = Field(None, description="W3C trace id of the attempt (32 hex chars).")
    accepted_at: datetime | None = Field(description="When the ingress accepted the webhook.")
    started_at: datetime = Field(description="When the connector started.")
    finished_at: datetime = Field(description="When it finished.")

    @classmethod
    def of(cls, row: SyncAttemptRow) -> AttemptOut:
        """From a stored row, masking the ERP's message and the error's details."""
        out = cls.model_validate(row, from_attributes=True)
        if out.error_message is not None:
            out.error_message = mask_text(out.error_message)
        error = row.error or {}
        extra = {k: v for k, v in error.items() if k not in _ERROR_FIELDS and v is not None}
        out.error_details = mask_tree(extra) if extra else None
        differences = error.get("differences")
        if isinstance(differences, list) and differences:
            out.differences = [DifferenceOut.model_validate(mask_tree(d)) for d in differences if isinstance(d, dict)]
        return out


class SyncRecordPage(BaseModel):
    """A page of sync records."""

    data: list[SyncRecordOut] = Field(description="Records, newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class OutcomeCounts(BaseModel):
    """How many records match a filter, per latest outcome."""

    total: int = Field(description="All matching records.")
    by_outcome: dict[str, int] = Field(description="Per latest outcome (`failed`, `succeeded`, …).")


class SourceDocumentOut(BaseModel):
    """The source document a record came from, as the ingress accepted it (masked)."""

    event_id: str = Field(description="`ce_id` of the raw event (the source's delivery id, or a hash of it).")
    source: str = Field(description="Source system.")
    received_at: datetime = Field(description="When the ingress accepted it.")
    event_type: str | None = Field(description="`ce_type` of the raw event (the source's event type).")
    body: Any = Field(description="The document: JSON when it parses, else text; masked.")


def _masked_body(value: bytes) -> Any:
    try:
        return mask_tree(orjson.loads(value))
    except orjson.JSONDecodeError:
        return mask_text(value.decode("utf-8", "replace"))


class SyncRecordDetail(SyncRecordOut):
    """A sync record with all its attempts and the canonical record last published for it."""

    attempts: list[AttemptOut] = Field(description="Every attempt, oldest first.")
    canonical_record: dict[str, Any] | None = Field(
        description="The latest canonical record JSON (masked), null when the audit has not seen it."
    )
    source_id: str | None = Field(None, description="Id of the source document in its source system.")
    document_number: str | None = Field(None, description="The document's number (bill, invoice, PO…).")
    trace_id: str | None = Field(None, description="W3C trace id of the latest attempt (or of the canonical record).")
    source_document: SourceDocumentOut | None = Field(
        None, description="The source document it came from (same trace), null when the audit has not seen it."
    )


class RetryAccepted(BaseModel):
    """A re-drive was published; its result will appear as a new attempt."""

    id: str = Field(description="Sync record id.")
    event_id: str = Field(description="`ce_id` of the re-published canonical event.")
    topic: str = Field(description="Topic it was published to.")
    connection: str = Field(description="The only connection that should book it.")


class RecordFilterIn(BaseModel):
    """Which records a bulk re-drive takes (only failed ones, whatever else is given)."""

    tenant: Text | None = Field(None, description="Tenant.")
    source: Text | None = Field(None, description="Source system.")
    object_type: Text | None = Field(None, description="Canonical object type.")
    erp: Text | None = Field(None, description="ERP kind.")
    connection: Text | None = Field(None, description="ERP connection.")
    since: datetime | None = Field(None, description="Last attempt at or after.")
    until: datetime | None = Field(None, description="Last attempt before.")
    q: Text | None = Field(None, description="Source id, document number or event id.")


class BulkRetryIn(RecordFilterIn):
    """One page of a bulk re-drive: the filter, the page size and the cursor of the previous page."""

    limit: int = Field(50, ge=1, le=200, description="Records re-driven by this call.")
    cursor: Text | None = Field(None, description="`next_cursor` of the previous call; null to start.")


class BulkRetryOut(BaseModel):
    """What one page of a bulk re-drive did."""

    redriven: list[RetryAccepted] = Field(description="Records re-driven by this call.")
    failed: list[str] = Field(description="Ids that could not be re-driven (canonical record never seen).")
    next_cursor: str | None = Field(description="Pass as `cursor` to continue; null when every match was handled.")
    failed_matching: int = Field(
        description="Failed records matching the filter now; re-driven ones stay failed until their new result arrives."
    )


class DeadLetterOut(BaseModel):
    """A dead letter of any stage: why it was dead-lettered and where it came from."""

    id: str = Field(description="Dead letter id (32 hex chars).")
    stage: str = Field(description="Stage that dead-lettered it: ingress, transform, connector, audit.")
    reason: str = Field(description="Reason code, e.g. `invalid-record`, `retries-exhausted`.")
    detail: str = Field(description="What went wrong, masked.")
    attempts: int | None = Field(description="Attempts made before giving up.")
    tenant: str | None = Field(description="Tenant (`ce_tenant`), when known.")
    event_id: str | None = Field(description="`ce_id` of the message.")
    event_type: str | None = Field(description="`ce_type` of the message.")
    trace_id: str | None = Field(description="W3C trace id.")
    topic: str = Field(description="Dead-letter topic.")
    partition: int = Field(description="Partition on the dead-letter topic.")
    offset: int = Field(description="Offset on the dead-letter topic.")
    original_topic: str | None = Field(description="Where it was read from (and goes back to on replay).")
    dead_lettered_at: datetime = Field(description="When it was dead-lettered.")
    replay_count: int = Field(description="How often it was replayed from this API.")
    last_replayed_at: datetime | None = Field(description="When it was last replayed from this API.")

    @classmethod
    def of(cls, row: DeadLetterRow) -> DeadLetterOut:
        """From a stored row, masking the detail."""
        out = cls.model_validate(row, from_attributes=True)
        out.detail = mask_text(out.detail)
        return out


class DeadLetterDetail(DeadLetterOut):
    """A dead letter with its message (masked): key, body and headers."""

    key: str | None = Field(description="Kafka key (UTF-8, undecodable bytes replaced).")
    body: Any = Field(description="The message value: JSON when it parses, else text; masked.")
    headers: dict[str, str] = Field(description="Headers as dead-lettered, masked.")


class DeadLetterPageOut(BaseModel):
    """A page of dead letters."""

    data: list[DeadLetterOut] = Field(description="Dead letters, newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class StageCounts(BaseModel):
    """Dead letters matching a filter, per stage."""

    total: int = Field(description="All matching dead letters.")
    by_stage: dict[str, int] = Field(description="Per stage.")


class ReplayIn(BaseModel):
    """Which dead letters to replay (as `ledgerflow replay dlq`); empty lists match everything."""

    stages: list[StageName] = Field(default_factory=list, max_length=5, description="Stages.")
    reasons: list[Text] = Field(default_factory=list, max_length=50, description="Reasons.")
    tenant: Text | None = Field(None, description="Tenant.")
    since: datetime | None = Field(None, description="Dead-lettered at or after.")
    until: datetime | None = Field(None, description="Dead-lettered before.")
    dry_run: bool = Field(False, description="Only list what would be replayed.")
    limit: int = Field(500, ge=1, le=1000, description="Most dead letters replayed by this call (oldest first).")


class ReplayOut(BaseModel):
    """Dead letters replayed (or that would be, in a dry run) and those that cannot be routed back."""

    dry_run: bool = Field(description="Nothing was published.")
    replayed: list[DeadLetterOut] = Field(description="Replayed to their original topics, in this order.")
    skipped: list[DeadLetterOut] = Field(description="Without an original topic: cannot be replayed.")


class ConnectionOut(BaseModel):
    """An ERP connection as the audit sees it (error rate over the last 24 hours)."""

    connection: str = Field(description="Connection name.")
    erp: str = Field(description="ERP kind.")
    tenants: list[str] = Field(description="Tenants with records on it (those the caller sees).")
    records: int = Field(description="Sync records.")
    failed_records: int = Field(description="Sync records whose latest attempt failed.")
    last_success_at: datetime | None = Field(description="Latest successful attempt.")
    last_attempt_at: datetime | None = Field(description="Latest attempt.")
    attempts_24h: int = Field(description="Attempts finished in the last 24 hours.")
    failures_24h: int = Field(description="Failed attempts in the last 24 hours.")
    error_rate_24h: float | None = Field(description="failures / attempts in the last 24 hours; null without attempts.")
    health: Literal["healthy", "degraded", "failing", "idle"] = Field(
        description="healthy: no failure in 24 h; degraded: some; failing: every attempt failed; idle: none."
    )
    erp_requests_last_minute: int = Field(
        description="ERP requests (in-place retries included) of the attempts recorded in the last minute."
    )
    rate_limit_per_minute: float | None = Field(
        description="`options.rate_limit_per_minute` of the connection in the routing file; null = its ERP's default."
    )
    rate_limit_headroom: float | None = Field(
        description="rate_limit_per_minute − erp_requests_last_minute (as recorded by the audit); null without a limit."
    )

    @classmethod
    def of(cls, health: ConnectionHealth, rate_limit: float | None = None) -> ConnectionOut:
        """From the store's summary and the connection's configured rate limit (requests per minute)."""
        return cls(
            connection=health.connection,
            erp=health.erp,
            tenants=health.tenants,
            records=health.records,
            failed_records=health.failed_records,
            last_success_at=health.last_success_at,
            last_attempt_at=health.last_attempt_at,
            attempts_24h=health.attempts_in_window,
            failures_24h=health.failures_in_window,
            error_rate_24h=health.error_rate,
            health=health.health,
            erp_requests_last_minute=health.requests_last_minute,
            rate_limit_per_minute=rate_limit,
            rate_limit_headroom=None if rate_limit is None else rate_limit - health.requests_last_minute,
        )


class BucketOut(BaseModel):
    """A number of documents and the sum of their amounts (document currency, decimal string)."""

    count: int = Field(description="Documents.")
    amount: str = Field(description="Sum of their totals, major units, decimal string.")


class UnbookedOut(BaseModel):
    """A document accepted from the source and not booked: its outcome and why."""

    canonical_id: str = Field(description="Canonical id.")
    outcome: str = Field(description="failed, skipped or pending.")
    amount: str = Field(description="Its total, decimal string.")
    code: str | None = Field(description="Error code of the latest attempt (e.g. `erp.mismatch`).")
    reason: str | None = Field(description="Why, in words.")


class ControlTotalOut(BaseModel):
    """Control totals of one connection, object type and currency."""

    connection: str = Field(description="ERP connection.")
    erp: str | None = Field(description="ERP kind.")
    object_type: str = Field(description="Canonical object type.")
    currency: str = Field(description="ISO 4217 currency.")
    accepted: BucketOut = Field(description="Accepted from the source.")
    booked: BucketOut = Field(description="Booked (succeeded or duplicate, read back).")
    skipped: BucketOut = Field(description="Skipped with a reason.")
    failed: BucketOut = Field(description="Latest attempt failed.")
    pending: BucketOut = Field(description="No result yet.")
    difference: BucketOut = Field(description="accepted − booked − skipped.")
    unbooked: list[UnbookedOut] = Field(description="Documents skipped, failed or pending, with the reason.")


class ReconciliationOut(BaseModel):
    """Control totals of a tenant over a period (:mod:`ledgerflow.audit.reconcile`)."""

    tenant: str = Field(description="Tenant.")
    since: datetime = Field(description="Start of the period (inclusive).")
    until: datetime | None = Field(description="End of the period (exclusive); null = now.")
    balanced: bool = Field(description="Every difference is zero.")
    totals: list[ControlTotalOut] = Field(description="Per connection, object type and currency.")
    dead_letters: dict[str, int] = Field(description="Dead letters of the tenant in the period, per stage.")


class PrincipalOut(BaseModel):
    """Who the caller is."""

    subject: str = Field(description="Key id, or the token's subject.")
    name: str = Field(description="Key name, or the token's user name.")
    kind: Literal["api-key", "oidc"] = Field(description="How the caller authenticated.")
    scopes: list[str] = Field(description="Granted scopes (implied ones included).")
    tenants: list[str] = Field(description="Tenants the caller sees; `*` = every tenant.")


class KeyIn(BaseModel):
    """A key to create."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)] = Field(description="What it is for.")
    scopes: list[Literal["read", "redrive", "admin"]] = Field(min_length=1, description="Scopes.")
    tenants: list[Annotated[str, Field(min_length=1, max_length=100, pattern=_TEXT)]] = Field(
        min_length=1, max_length=100, description="Tenants it sees; `*` = every tenant."
    )


class KeyOut(BaseModel):
    """An API key (never its secret)."""

    id: str = Field(description="Key id (the middle part of the key).")
    name: str = Field(description="What it is for.")
    scopes: list[str] = Field(description="Scopes.")
    tenants: list[str] = Field(description="Tenants; `*` = every tenant.")
    created_at: datetime = Field(description="Created.")
    last_used_at: datetime | None = Field(description="Last used (to the minute).")
    revoked_at: datetime | None = Field(description="Revoked.")

    @classmethod
    def of(cls, row: ApiKeyRow) -> KeyOut:
        """From a stored row."""
        return cls.model_validate(row, from_attributes=True)


class KeyCreated(KeyOut):
    """A key just created: `key` is shown this once and never stored."""

    key: str = Field(description="The API key: send it as `Authorization: Bearer <key>`.")


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request: a parameter or body field is invalid (detail says which).",
        401: "No credential, or an unknown, revoked or invalid one.",
        403: "The credential lacks the scope this operation needs.",
        404: "Unknown, or of a tenant the caller does not see.",
        409: "The operation does not apply in the current state.",
        503: "The broker did not acknowledge the write; try again.",
    }
    base = (400, 401, 403)
    return {status: problem_doc(text[status]) for status in (*base, *statuses)}


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is malformed"


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as RFC 9457 problem+json: HTTP errors, validation errors, :class:`Problem`."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        problem = Problem(
            exc.status_code,
            title.lower().replace(" ", "-"),
            title,
            f"{request.method} {request.url.path}: {exc.detail}",
            headers=dict(exc.headers or {}),
        )
        return problem_response(problem, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        return problem_response(Problem(400, "bad-request", "Bad request", _validation_detail(exc)), request.url.path)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with 400 problem answers in place of FastAPI's 422 validation errors."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        app.openapi_schema = doc
        return doc

    return build


bearer = HTTPBearer(auto_error=False, description="An API key (`lfk_…`) or an OIDC access token.")


async def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """FastAPI dependency: the caller's principal (``app.state.authenticator``).

    Raises:
        Problem: 401 without a valid credential.
    """
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(credentials.credentials if credentials else None)


def require(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """FastAPI dependency factory: the caller's principal, if it holds ``scope`` (else 403 problem)."""

    async def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not principal.can(scope):
            raise forbidden(f"this operation needs the {scope!r} scope")
        return principal

    return check


Reader = Annotated[Principal, Depends(require("read"))]
Redriver = Annotated[Principal, Depends(require("redrive"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Id = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Id.")]


def create_app(
    store: AuditStore,
    publish: Publish,
    settings: Settings,
    *,
    authenticator: Authenticator,
    rate_limits: Mapping[str, float] | None = None,
    connection_check: ConnectionCheck | None = None,
    oauth_transport: httpx.AsyncBaseTransport | None = None,
    reference_connections: Mapping[str, Collection[str]] | None = None,
    mapping_kinds: KindsOf | None = None,
) -> FastAPI:
    """The sync-records API over ``store``; ``publish(topic, key, value, headers)`` re-publishes re-drives.

    Args:
        store: the audit store.
        publish: writes one message, returning once the broker acknowledged it.
        settings: topic prefix.
        authenticator: API keys and (optionally) OIDC tokens.
        rate_limits: connection → ``rate_limit_per_minute`` set in the routing file (headroom shown).
        connection_check: the composition layer's check of stored connections (ERP kinds and
            options, the routing file's names and tenants); None = their shape only.
        oauth_transport: httpx transport of the OAuth code exchange (tests); None = the network.
        reference_connections: connection whose ERP has a reader → its tenants (on-demand reference sync).
        mapping_kinds: the mapping kinds each ERP's connector honours (``/v1/mappings`` refuses the
            others); None = the tenant and connection are checked, not the kind.

    Returns:
        A FastAPI app: the API under ``/v1`` (OpenAPI at ``/v1/openapi.json``), no docs UI (nothing
        is loaded from a CDN; the console at ``/console`` is the UI).
    """
    app = FastAPI(
        title="ledgerflow sync records",
        version=__version__,
        description="Every attempt to book a canonical record into an ERP connection, dead letters of every "
        "stage, re-drives and replays. Authenticate with `Authorization: Bearer <API key or OIDC token>`.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    install_problem_handlers(app)

    http_problem = app.exception_handlers[StarletteHTTPException]

    async def unauthenticated(request: Request) -> Response | None:
        # A malformed request without a valid credential is a 401 like any other: nothing about
        # the API is told to an unauthenticated caller (bodies are parsed before dependencies run).
        if not request.url.path.startswith(API_PREFIX + "/") or request.url.path == app.openapi_url:
            return None
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        try:
            await authenticator.authenticate(credential.strip() if scheme.lower() == "bearer" else None)
        except Problem as problem:
            return problem_response(problem, request.url.path)
        return None

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        refused = await unauthenticated(request)
        if refused is not None:
            return refused
        return problem_response(Problem(400, "bad-request", "Bad request", _validation_detail(exc)), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        refused = await unauthenticated(request) if exc.status_code == 400 else None
        if refused is not None:
            return refused
        response: Response = await http_problem(request, exc)  # type: ignore[misc]
        return response

    ops = Operations(store, publish, settings.topics)
    limits = dict(rate_limits or {})
    app.state.operations = ops
    app.state.rate_limits = limits
    app.state.authenticator = authenticator
    app.state.store = store

    def visible_tenants(principal: Principal, tenant: str | None) -> tuple[str, ...] | None:
        if tenant is not None and not principal.sees(tenant):
            raise Problem(404, "not-found", "Not found", f"no tenant {tenant!r}")
        tenants = principal.tenant_list()
        return None if tenants is None else tuple(tenants)

    router = APIRouter(prefix=API_PREFIX)

    def record_filter(
        principal: Principal,
        tenant: str | None,
        source: str | None,
        object_type: str | None,
        erp: str | None,
        connection: str | None,
        outcome: str | None,
        since: datetime | None,
        until: datetime | None,
        q: str | None,
    ) -> RecordFilter:
        return RecordFilter(
            tenant=tenant,
            source=source,
            object_type=object_type,
            erp=erp,
            connection=connection,
            outcome=outcome,
            since=since,
            until=until,
            search=q or None,
            tenants=visible_tenants(principal, tenant),
        )

    @router.get("/me", summary="Who am I", responses=_problems())
    async def me(principal: Annotated[Principal, Depends(authenticated)]) -> PrincipalOut:
        """The caller's identity, scopes and tenants."""
        tenants = principal.tenant_list()
        return PrincipalOut(
            subject=principal.subject,
            name=principal.name,
            kind=principal.kind,
            scopes=[s for s in SCOPES if principal.can(s)],
            tenants=[ALL_TENANTS] if tenants is None else tenants,
        )

    @router.get("/sync-records", summary="List sync records", responses=_problems(404))
    async def list_sync_records(
        principal: Reader,
        tenant: Annotated[str | None, _text("Tenant.")] = None,
        source: Annotated[str | None, _text("Source system, e.g. `mercoa`.")] = None,
        object_type: Annotated[str | None, _text("Canonical object type, e.g. `bill`.")] = None,
        erp: Annotated[str | None, _text("ERP kind, e.g. `quickbooks`.")] = None,
        connection: Annotated[str | None, _text("ERP connection name.")] = None,
        outcome: Annotated[Outcome | None, Query(description="Latest outcome.")] = None,
        since: Annotated[datetime | None, Query(description="Last attempt at or after (ISO 8601).")] = None,
        until: Annotated[datetime | None, Query(description="Last attempt before (ISO 8601).")] = None,
        q: Annotated[str | None, _text("Source id, document number or event id (exact).")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
        cursor: Annotated[str | None, _text("`next_cursor` of the previous page.")] = None,
        direction: Annotated[
            Direction | None, Query(description="`outbound` (booked into an ERP) or `inbound` (written into a source).")
        ] = None,
    ) -> SyncRecordPage:
        """Sync records matching every given filter, newest first, one page at a time."""
        filters = record_filter(
            principal, tenant, source, object_type, erp, connection, outcome.value if outcome else None, since, until, q
        )
        if direction is not None:
            filters = dataclasses.replace(filters, direction=direction)
        try:
            page = await store.list_records(filters, limit=limit, cursor=cursor)
        except InvalidCursorError as exc:
            raise Problem(400, "invalid-cursor", "Invalid cursor", str(exc)) from None
        return SyncRecordPage(data=[SyncRecordOut.of(r) for r in page.records], next_cursor=page.next_cursor)

    @router.get("/sync-records/counts", summary="Count sync records per outcome", responses=_problems(404))
    async def count_sync_records(
        principal: Reader,
        tenant: Annotated[str | None, _text("Tenant.")] = None,
        source: Annotated[str | None, _text("Source system.")] = None,
        object_type: Annotated[str | None, _text("Canonical object type.")] = None,
        erp: Annotated[str | None, _text("ERP kind.")] = None,
        connection: Annotated[str | None, _text("ERP connection name.")] = None,
        since: Annotated[datetime | None, Query(description="Last attempt at or after.")] = None,
        until: Annotated[datetime | None, Query(description="Last attempt before.")] = None,
        q: Annotated[str | None, _text("Source id, document number or event id.")] = None,
    ) -> OutcomeCounts:
        """How many records match the filter, per latest outcome (the console's live counts)."""
        filters = record_filter(principal, tenant, source, object_type, erp, connection, None, since, until, q)
        counts = await store.count_outcomes(filters)
        return OutcomeCounts(total=sum(counts.values()), by_outcome=counts)

    @router.get("/sync-records/{record_id}", summary="Get one sync record", responses=_problems(404))
    async def get_sync_record(principal: Reader, record_id: Id) -> SyncRecordDetail:
        """The record, all its attempts with the ERP's answers, and its canonical record (masked)."""
        return await record_detail(store, principal, record_id)

    @router.post(
        "/sync-records/{record_id}/retry",
        status_code=202,
        summary="Re-drive a failed record to its ERP connection",
        responses=_problems(404, 409, 503),
    )
    async def retry_sync_record(principal: Redriver, record_id: Id) -> RetryAccepted:
        """Re-publish the latest canonical record for this record's connection only."""
        done = await ops.redrive(record_id, visible=principal.sees)
        return RetryAccepted(id=done.id, event_id=done.event_id, topic=done.topic, connection=done.connection)

    @router.post(
        "/sync-records/retry",
        summary="Re-drive a page of the failed records matching a filter",
        responses=_problems(404, 503),
    )
    async def retry_sync_records(principal: Redriver, body: Annotated[BulkRetryIn, Body()]) -> BulkRetryOut:
        """Re-drive up to `limit` failed records matching the filter; call again with `next_cursor` for more."""
        return await bulk_redrive(store, ops, principal, body)

    @router.get("/dead-letters", summary="List dead letters", responses=_problems(404))
    async def list_dead_letters(
        principal: Reader,
        stage: Annotated[list[StageName] | None, Query(description="Stages (repeat for several).")] = None,
        reason: Annotated[list[str] | None, Query(max_length=50, description="Reasons (repeat for several).")] = None,
        tenant: Annotated[str | None, _text("Tenant.")] = None,
        since: Annotated[datetime | None, Query(description="Dead-lettered at or after.")] = None,
        until: Annotated[datetime | None, Query(description="Dead-lettered before.")] = None,
        q: Annotated[str | None, _text("Event id (`ce_id`) or dead letter id.")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
        cursor: Annotated[str | None, _text("`next_cursor` of the previous page.")] = None,
    ) -> DeadLetterPageOut:
        """Dead letters of every stage matching the filters, newest first."""
        filters = dead_letter_filter(principal, stage, reason, tenant, since, until, q)
        try:
            page = await store.list_dead_letters(filters, limit=limit, cursor=cursor)
        except InvalidCursorError as exc:
            raise Problem(400, "invalid-cursor", "Invalid cursor", str(exc)) from None
        return DeadLetterPageOut(data=[DeadLetterOut.of(d) for d in page.dead_letters], next_cursor=page.next_cursor)

    @router.get("/dead-letters/counts", summary="Count dead letters per stage", responses=_problems(404))
    async def count_dead_letters(
        principal: Reader,
        tenant: Annotated[str | None, _text("Tenant.")] = None,
    ) -> StageCounts:
        """How many dead letters there are per stage."""
        counts = await store.count_dead_letters(dead_letter_filter(principal, None, None, tenant, None, None, None))
        return StageCounts(total=sum(counts.values()), by_stage=counts)

    @router.get("/dead-letters/{dead_letter_id}", summary="Get one dead letter", responses=_problems(404))
    async def get_dead_letter(principal: Reader, dead_letter_id: Id) -> DeadLetterDetail:
        """The dead letter with its message: key, body and headers, masked."""
        return dead_letter_detail(await visible_dead_letter(store, principal, dead_letter_id))

    @router.post(
        "/dead-letters/{dead_letter_id}/replay",
        summary="Replay one dead letter to its original topic",
        responses=_problems(404, 409, 503),
    )
    async def replay_dead_letter(principal: Redriver, dead_letter_id: Id) -> ReplayOut:
        """Re-publish it where it came from, as `ledgerflow replay dlq` does (same `ce_id`)."""
        letter = await visible_dead_letter(store, principal, dead_letter_id)
        if not letter.original_topic:
            raise Problem(409, "not-replayable", "Not replayable", "this dead letter names no original topic")
        done = await ops.replay([letter])
        return ReplayOut(dry_run=False, replayed=[DeadLetterOut.of(d) for d in done.replayed], skipped=[])

    @router.post(
        "/dead-letters/replay",
        summary="Replay every dead letter matching a filter",
        responses=_problems(404, 503),
    )
    async def replay_dead_letters(principal: Redriver, body: Annotated[ReplayIn, Body()]) -> ReplayOut:
        """Re-publish the matching dead letters (oldest first, up to `limit`) to their original topics."""
        filters = dead_letter_filter(
            principal, list(body.stages), list(body.reasons), body.tenant, body.since, body.until, None
        )
        letters = await store.dead_letters_in_order(filters, limit=body.limit)
        done = await ops.replay(letters, dry_run=body.dry_run)
        return ReplayOut(
            dry_run=body.dry_run,
            replayed=[DeadLetterOut.of(d) for d in done.replayed],
            skipped=[DeadLetterOut.of(d) for d in done.skipped],
        )

    @router.get("/reconciliation", summary="Control totals of a tenant", responses=_problems(404))
    async def control_totals(
        principal: Reader,
        tenant: Annotated[str, Query(min_length=1, max_length=100, pattern=_TEXT, description="Tenant.")],
        since: Annotated[datetime, Query(description="Documents received at or after (ISO 8601).")],
        until: Annotated[datetime | None, Query(description="Documents received before (ISO 8601).")] = None,
        connection: Annotated[str | None, _text("Only this ERP connection.")] = None,
    ) -> ReconciliationOut:
        """Per connection, object type and currency: accepted, booked, skipped, failed, pending and the difference.

        The same figures as ``ledgerflow reconcile``; every document in a difference is listed with its reason.
        """
        visible_tenants(principal, tenant)
        result = await reconcile(store, tenant=tenant, since=since, until=until, connection=connection)
        return ReconciliationOut.model_validate(result.as_json())

    @router.get("/connections", summary="ERP connections: health, last success, error rate", responses=_problems())
    async def list_connections(principal: Reader) -> list[ConnectionOut]:
        """Every connection with records the caller sees."""
        tenants = principal.tenant_list()
        health = await store.connections(None if tenants is None else tuple(tenants))
        return [ConnectionOut.of(h, limits.get(h.connection)) for h in health]

    @router.get("/keys", summary="List API keys", responses=_problems())
    async def list_keys(
        principal: Admin,
        include_revoked: Annotated[bool, Query(description="Include revoked keys.")] = False,
    ) -> list[KeyOut]:
        """Every key (never a secret)."""
        return [KeyOut.of(k) for k in await authenticator.keys.list(include_revoked=include_revoked)]

    @router.post("/keys", status_code=201, summary="Create an API key", responses=_problems(404))
    async def create_key(principal: Admin, body: Annotated[KeyIn, Body()]) -> KeyCreated:
        """Create a key; its secret is in this answer only."""
        if principal.tenants is not None and (
            ALL_TENANTS in body.tenants or not set(body.tenants) <= principal.tenants
        ):
            raise Problem(404, "not-found", "Not found", "a key can only see tenants its creator sees")
        created = await authenticator.keys.create(body.name, list(body.scopes), body.tenants)
        return KeyCreated(**KeyOut.of(created.row).model_dump(), key=created.key)

    @router.delete("/keys/{key_id}", status_code=204, summary="Revoke an API key", responses=_problems(404))
    async def revoke_key(principal: Admin, key_id: Id) -> Response:
        """Revoke the key at once (its next request answers 401)."""
        if not await authenticator.keys.revoke(key_id):
            raise Problem(404, "not-found", "Not found", f"no live key {key_id}")
        return Response(status_code=204)

    from ledgerflow.audit.reference_sync_api import reference_sync_router  # it imports this module

    reference_sync_router(ReferenceRuns(store.engine), reference_connections or {})(router)
    # The mapping tables live in the state store, beside the audit tables: same database and engine.
    state = StateStore(store.url, engine=store.engine)
    # A mapping's tenant must route to its connection (the routing file and the stored connections,
    # which live in this database too), and its kind be one the connection's connector uses.
    routing_settings = settings.model_copy(update={"state_url": store.url})

    async def mapping_target(tenant: str, connection: str, kind: str | None) -> MappingTargetProblem | None:
        try:
            routing = await mapping_routing(routing_settings)
        except ConfigError as exc:
            return MappingTargetProblem(409, "invalid-routing", "Routing invalid", str(exc))
        return target_problem(routing, tenant, connection, kind, mapping_kinds)

    router.include_router(mappings_router(state, require("read"), require("admin"), mapping_target))
    app.include_router(router)
    install_connections(app, store.engine, settings, check=connection_check, transport=oauth_transport)
    return app


def dead_letter_filter(
    principal: Principal,
    stages: Sequence[str] | None,
    reasons: Sequence[str] | None,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    q: str | None,
) -> DeadLetterFilter:
    """The store filter for what ``principal`` asked and may see.

    Raises:
        Problem: 404 for a tenant the principal does not see.
    """
    if tenant is not None and not principal.sees(tenant):
        raise Problem(404, "not-found", "Not found", f"no tenant {tenant!r}")
    tenants = principal.tenant_list()
    return DeadLetterFilter(
        stages=tuple(stages or ()),
        reasons=tuple(reasons or ()),
        tenant=tenant,
        since=since,
        until=until,
        search=q or None,
        tenants=None if tenants is None else tuple(tenants),
    )


async def visible_dead_letter(store: AuditStore, principal: Principal, dead_letter_id: str) -> DeadLetterRow:
    """The dead letter if ``principal`` sees its tenant.

    Raises:
        Problem: 404 unknown or not visible.
    """
    letter = await store.get_dead_letter(dead_letter_id)
    if letter is None or not principal.sees(letter.tenant):
        raise Problem(404, "not-found", "Not found", f"no dead letter {dead_letter_id}")
    return letter


def dead_letter_detail(letter: DeadLetterRow) -> DeadLetterDetail:
    """The API view of one dead letter with its message, masked."""
    body = _masked_body(letter.value)
    headers = {k: v for k, v in mask_tree(dict(letter.headers)).items() if isinstance(v, str)}
    return DeadLetterDetail(
        **DeadLetterOut.of(letter).model_dump(),
        key=letter.key.decode("utf-8", "replace") if letter.key is not None else None,
        body=body,
        headers=headers,
    )


async def record_detail(store: AuditStore, principal: Principal, record_id: str) -> SyncRecordDetail:
    """The API view of one sync record, if ``principal`` sees its tenant.

    Raises:
        Problem: 404 unknown or not visible.
    """
    found = await store.get_record(record_id)
    if found is None or not principal.sees(found[0].tenant):
        raise Problem(404, "not-found", "Not found", f"no sync record {record_id}")
    row, attempts = found
    canonical = await store.get_canonical(row.canonical_id, tenant=row.tenant)
    outs = [AttemptOut.of(a) for a in attempts]
    trace = next((a.trace_id for a in reversed(outs) if a.trace_id), None)
    if trace is None and canonical is not None:
        parts = canonical.headers.get("traceparent", "").split("-")
        trace = parts[1] if len(parts) == 4 else None
    document = None
    canonical_trace = None
    if canonical is not None:
        parts = canonical.headers.get("traceparent", "").split("-")
        canonical_trace = parts[1] if len(parts) == 4 else None
    for trace_candidate in dict.fromkeys(t for t in (canonical_trace, trace) if t):
        found_document = await store.source_document(trace_candidate, row.tenant)
        if found_document is not None:
            document = SourceDocumentOut(
                event_id=found_document.event_id,
                source=found_document.source,
                received_at=found_document.received_at,
                event_type=found_document.headers.get("ce_type"),
                body=_masked_body(found_document.body),
            )
            break
    return SyncRecordDetail(
        **SyncRecordOut.of(row).model_dump(),
        source_document=document,
        attempts=outs,
        canonical_record=mask_tree(orjson.loads(canonical.body)) if canonical else None,
        source_id=canonical.source_id if canonical else row.canonical_id.split(":", 3)[-1],
        document_number=canonical.document_number if canonical else None,
        trace_id=trace,
    )


async def bulk_redrive(store: AuditStore, ops: Operations, principal: Principal, body: BulkRetryIn) -> BulkRetryOut:
    """Re-drive one page of the failed records matching ``body`` that ``principal`` sees.

    Raises:
        Problem: 400 invalid cursor, 404 tenant not visible.
    """
    if body.tenant is not None and not principal.sees(body.tenant):
        raise Problem(404, "not-found", "Not found", f"no tenant {body.tenant!r}")
    tenants = principal.tenant_list()
    filters = RecordFilter(
        tenant=body.tenant,
        source=body.source,
        object_type=body.object_type,
        erp=body.erp,
        connection=body.connection,
        outcome=Outcome.FAILED.value,
        since=body.since,
        until=body.until,
        search=body.q or None,
        tenants=None if tenants is None else tuple(tenants),
    )
    try:
        page = await store.list_records(filters, limit=body.limit, cursor=body.cursor)
    except InvalidCursorError as exc:
        raise Problem(400, "invalid-cursor", "Invalid cursor", str(exc)) from None
    redriven: list[RetryAccepted] = []
    failed: list[str] = []
    for row in page.records:
        try:
            done = await ops.redrive(row.id, visible=principal.sees)
        except Problem as problem:
            if problem.status != 409:
                raise
            failed.append(row.id)
            continue
        redriven.append(RetryAccepted(id=done.id, event_id=done.event_id, topic=done.topic, connection=done.connection))
    remaining = (await store.count_outcomes(filters)).get(Outcome.FAILED.value, 0)
    return BulkRetryOut(redriven=redriven, failed=failed, next_cursor=page.next_cursor, failed_matching=remaining)
