"""The operator console at ``/console``: find, understand and re-drive failed syncs, replay dead letters.

Stack: server-rendered Jinja2 templates (``templates/``) with htmx (``static/htmx.min.js``, BSD
Zero-Clause, vendored from the ``htmx.org`` npm package) for the live parts — counts that refresh,
filters that update the table, re-drive and replay without a page reload, a bulk re-drive that
shows its progress. Why: no build step and no JavaScript of our own beyond htmx, every page is
plain HTML that works with the keyboard and a screen reader, and everything ships in the wheel
(no CDN). The console calls the same functions as the API (:mod:`ledgerflow.audit.api`,
:mod:`ledgerflow.audit.operations`), so it gives the same answers and guarantees.

Authentication is the API's: the login form takes an API key (or an OIDC access token), checks
it, and keeps it in an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/console``. Every
state-changing request also carries a CSRF token derived from the credential (HMAC-SHA256), sent
by htmx as the ``X-CSRF-Token`` header. Scopes and tenants apply as in the API: the re-drive and
replay buttons are shown only with ``redrive``, and another tenant's record is a 404 page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ledgerflow.audit.api import (
    BulkRetryIn,
    ConnectionOut,
    DeadLetterOut,
    SyncRecordOut,
    bulk_redrive,
    dead_letter_detail,
    dead_letter_filter,
    record_detail,
    visible_dead_letter,
)
from ledgerflow.audit.auth import Authenticator, Principal, forbidden
from ledgerflow.audit.operations import Operations
from ledgerflow.audit.reconcile import reconcile
from ledgerflow.audit.store import AuditStore, InvalidCursorError, RecordFilter
from ledgerflow.audit.tables import sync_record_id
from ledgerflow.contracts.topics import STAGES
from ledgerflow.core.problems import Problem, problem_response

__all__ = ["CONSOLE_PREFIX", "COOKIE", "csrf_token", "install_console"]

CONSOLE_PREFIX = "/console"
"""Where the console is served."""
COOKIE = "ledgerflow_console"
"""Cookie holding the console's credential (HttpOnly, SameSite=Strict, path ``/console``)."""

_HERE = Path(__file__).resolve().parent
_OUTCOMES = ("failed", "succeeded", "skipped", "duplicate")
_PAGE = 50


def csrf_token(credential: str) -> str:
    """The CSRF token of a console session: HMAC-SHA256 of a fixed label keyed by the credential."""
    return hmac.new(credential.encode(), b"ledgerflow-console-csrf", hashlib.sha256).hexdigest()


def _clean(value: str | None) -> str | None:
    """A filter value from a form: stripped, control characters refused (None when empty)."""
    if value is None:
        return None
    value = value.strip()[:200]
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Problem(400, "bad-request", "Bad request", "filters cannot contain control characters")
    return value or None


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    """A ``YYYY-MM-DD`` date field as the start (or the end, exclusive) of that UTC day."""
    value = _clean(value)
    if value is None:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise Problem(400, "bad-request", "Bad request", f"{value!r} is not a date (YYYY-MM-DD)") from None
    return day + timedelta(days=1) if end else datetime.combine(day.date(), time(), UTC)


class _Session:
    """The signed-in operator of one request: principal, credential-derived CSRF token."""

    def __init__(self, principal: Principal, credential: str) -> None:
        self.principal = principal
        self.csrf = csrf_token(credential)

    @property
    def can_redrive(self) -> bool:
        return self.principal.can("redrive")


class _LoginRequired(Exception):  # noqa: N818 - control flow, not an error
    """No valid console credential: send the browser to the login page."""


def install_console(app: FastAPI) -> None:
    """Add the console (``/console``…) and its static files to the audit ``app``.

    ``app.state`` must hold ``store``, ``operations`` and ``authenticator``
    (:func:`ledgerflow.audit.api.create_app` sets them).
    """
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, default=str, ensure_ascii=False)
    templates.env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"
    store: AuditStore = app.state.store
    ops: Operations = app.state.operations
    authenticator: Authenticator = app.state.authenticator
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=str(_HERE / "static")), name="console-static")

    async def session(request: Request) -> _Session:
        credential = request.cookies.get(COOKIE)
        if not credential:
            raise _LoginRequired
        try:
            principal = await authenticator.authenticate(credential)
        except Problem:
            raise _LoginRequired from None
        return _Session(principal, credential)

    def check_csrf(request: Request, current: _Session, form_token: str | None = None) -> None:
        sent = request.headers.get("x-csrf-token") or form_token or ""
        if not hmac.compare_digest(sent, current.csrf):
            raise forbidden("missing or wrong CSRF token; reload the page")

    def page(request: Request, name: str, current: _Session | None, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(
            request,
            name,
            {"session": current, "principal": current.principal if current else None, **context},
            status_code=status,
        )

    @app.exception_handler(_LoginRequired)
    async def to_login(request: Request, _: _LoginRequired) -> Response:
        target = f"{CONSOLE_PREFIX}/login"
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    def tenants_of(principal: Principal) -> tuple[str, ...] | None:
        tenants = principal.tenant_list()
        return None if tenants is None else tuple(tenants)

    def record_filter(principal: Principal, params: Mapping[str, str], *, outcome: bool = True) -> RecordFilter:
        tenant = _clean(params.get("tenant"))
        if tenant is not None and not principal.sees(tenant):
            raise Problem(404, "not-found", "Not found", f"no tenant {tenant!r}")
        wanted = _clean(params.get("outcome")) if outcome else None
        if wanted is not None and wanted not in _OUTCOMES:
            raise Problem(400, "bad-request", "Bad request", f"unknown outcome {wanted!r}")
        return RecordFilter(
            tenant=tenant,
            source=_clean(params.get("source")),
            object_type=_clean(params.get("object_type")),
            connection=_clean(params.get("connection")),
            outcome=wanted,
            since=_day(params.get("since")),
            until=_day(params.get("until"), end=True),
            search=_clean(params.get("q")),
            tenants=tenants_of(principal),
        )

    def filter_query(params: Mapping[str, str], **changes: str | None) -> str:
        keys = ("tenant", "source", "connection", "object_type", "outcome", "since", "until", "q")
        values = {k: params.get(k) or "" for k in keys}
        values.update({k: v or "" for k, v in changes.items()})
        return urlencode({k: v for k, v in values.items() if v})

    async def render_problem(request: Request, problem: Problem) -> Response:
        current: _Session | None
        try:
            current = await session(request)
        except _LoginRequired:
            current = None
        if request.headers.get("hx-request"):
            return page(request, "_message.html", current, status=problem.status, level="error", text=problem.detail)
        return page(request, "error.html", current, status=problem.status, problem=problem)

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        # The console answers problems as HTML pages (or htmx fragments); the API keeps problem+json.
        if request.url.path.startswith(CONSOLE_PREFIX + "/"):
            return await render_problem(request, exc)
        return problem_response(exc, instance=request.url.path)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        """The sign-in page."""
        return page(request, "login.html", None)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request, key: Annotated[str, Form(max_length=4096)] = "") -> Response:
        """Check the key; on success keep it in the session cookie and go to the records."""
        key = key.strip()
        try:
            await authenticator.authenticate(key)
        except Problem as problem:
            return page(request, "login.html", None, status=401, error=problem.detail)
        response = RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=303)
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=CONSOLE_PREFIX,
            max_age=12 * 3600,
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        """Forget the session cookie."""
        response = RedirectResponse(f"{CONSOLE_PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=CONSOLE_PREFIX)
        return response

    @router.get("", include_in_schema=False)
    async def root_redirect() -> Response:
        """``/console`` → ``/console/``."""
        return RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=307)

    @router.get("/", response_class=HTMLResponse)
    async def records_page(request: Request) -> Response:
        """Sync records: filters, search, live counts, the table, bulk re-drive."""
        current = await session(request)
        params = request.query_params
        filters = record_filter(current.principal, params)
        facets = await store.facets(tenants_of(current.principal))
        table = await records_table_context(current, params, filters)
        return page(
            request,
            "records.html",
            current,
            facets=facets,
            params=params,
            outcomes=_OUTCOMES,
            query=filter_query(params),
            **table,
        )

    async def records_table_context(
        current: _Session, params: Mapping[str, str], filters: RecordFilter
    ) -> dict[str, Any]:
        cursor = _clean(params.get("cursor"))
        try:
            listed = await store.list_records(filters, limit=_PAGE, cursor=cursor)
        except InvalidCursorError:
            raise Problem(400, "invalid-cursor", "Invalid cursor", "the page link is no longer valid") from None
        next_query = filter_query(params, cursor=listed.next_cursor) if listed.next_cursor else None
        return {"records": [SyncRecordOut.of(r) for r in listed.records], "next_query": next_query}

    @router.get("/records-table", response_class=HTMLResponse)
    async def records_table(request: Request) -> Response:
        """The records table alone (htmx swaps it in when a filter changes)."""
        current = await session(request)
        params = request.query_params
        filters = record_filter(current.principal, params)
        context = await records_table_context(current, params, filters)
        return page(request, "_records_table.html", current, params=params, **context)

    @router.get("/counts", response_class=HTMLResponse)
    async def counts(request: Request) -> Response:
        """Live counts per outcome for the current filter (polled every few seconds)."""
        current = await session(request)
        params = request.query_params
        filters = record_filter(current.principal, params, outcome=False)
        by_outcome = await store.count_outcomes(filters)
        dead = await store.count_dead_letters(dead_letter_filter(current.principal, None, None, None, None, None, None))
        return page(
            request,
            "_counts.html",
            current,
            by_outcome=by_outcome,
            total=sum(by_outcome.values()),
            dead_letters=sum(dead.values()),
            outcomes=_OUTCOMES,
            query=filter_query(params, outcome=None),
        )

    @router.post("/bulk-redrive", response_class=HTMLResponse)
    async def bulk(request: Request) -> Response:
        """One page of a bulk re-drive of the failed records matching the filter; chains itself until done."""
        current = await session(request)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        check_csrf(request, current, fields.get("csrf"))
        if not current.can_redrive:
            raise forbidden("re-driving needs the 'redrive' scope")
        filters = record_filter(current.principal, fields, outcome=False)
        body = BulkRetryIn(
            tenant=filters.tenant,
            source=filters.source,
            object_type=filters.object_type,
            connection=filters.connection,
            since=filters.since,
            until=filters.until,
            q=filters.search,
            limit=25,
            cursor=_clean(fields.get("cursor")),
        )
        done = await bulk_redrive(store, ops, current.principal, body)
        total = int(fields.get("total") or 0) or done.failed_matching
        handled = int(fields.get("handled") or 0) + len(done.redriven) + len(done.failed)
        redriven = int(fields.get("redriven") or 0) + len(done.redriven)
        return page(
            request,
            "_bulk_progress.html",
            current,
            fields={k: v for k, v in fields.items() if k not in ("cursor", "total", "handled", "redriven", "csrf")},
            next_cursor=done.next_cursor,
            total=max(total, handled),
            handled=handled,
            redriven=redriven,
            not_redriven=handled - redriven,
        )

    @router.get("/records/{record_id}", response_class=HTMLResponse)
    async def record_page(request: Request, record_id: str) -> Response:
        """One record: source document, canonical record, attempts, differences, trace id, re-drive."""
        current = await session(request)
        detail = await record_detail(store, current.principal, _clean(record_id) or "")
        return page(request, "record.html", current, record=detail)

    @router.get("/records/{record_id}/status", response_class=HTMLResponse)
    async def record_status(request: Request, record_id: str) -> Response:
        """The record's outcome and attempts (polled after a re-drive until a new attempt arrives)."""
        current = await session(request)
        detail = await record_detail(store, current.principal, _clean(record_id) or "")
        return page(request, "_record_status.html", current, record=detail)

    @router.post("/records/{record_id}/redrive", response_class=HTMLResponse)
    async def redrive(request: Request, record_id: str) -> Response:
        """Re-drive one failed record (scope ``redrive``), then watch for its result."""
        current = await session(request)
        check_csrf(request, current)
        if not current.can_redrive:
            raise forbidden("re-driving needs the 'redrive' scope")
        done = await ops.redrive(_clean(record_id) or "", visible=current.principal.sees)
        detail = await record_detail(store, current.principal, done.id)
        return page(request, "_record_status.html", current, record=detail, redriven=done)

    @router.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters_page(request: Request) -> Response:
        """Dead letters per stage with reason and detail; replay one or all matching."""
        current = await session(request)
        params = request.query_params
        stage = _clean(params.get("stage"))
        if stage is not None and stage not in STAGES:
            raise Problem(400, "bad-request", "Bad request", f"unknown stage {stage!r}")
        reason = _clean(params.get("reason"))
        tenant = _clean(params.get("tenant"))
        filters = dead_letter_filter(
            current.principal, [stage] if stage else None, [reason] if reason else None, tenant, None, None, None
        )
        try:
            listed = await store.list_dead_letters(filters, limit=_PAGE, cursor=_clean(params.get("cursor")))
        except InvalidCursorError:
            raise Problem(400, "invalid-cursor", "Invalid cursor", "the page link is no longer valid") from None
        per_stage = await store.count_dead_letters(
            dead_letter_filter(current.principal, None, None, tenant, None, None, None)
        )
        base = {k: v for k, v in (("stage", stage), ("reason", reason), ("tenant", tenant)) if v}
        next_query = urlencode({**base, "cursor": listed.next_cursor}) if listed.next_cursor else None
        return page(
            request,
            "dead_letters.html",
            current,
            letters=[DeadLetterOut.of(d) for d in listed.dead_letters],
            stages=STAGES,
            per_stage=per_stage,
            stage=stage,
            reason=reason,
            tenant=tenant,
            next_query=next_query,
        )

    @router.get("/dead-letters/{dead_letter_id}", response_class=HTMLResponse)
    async def dead_letter_page(request: Request, dead_letter_id: str) -> Response:
        """One dead letter: stage, reason, detail, its message (masked), replay."""
        current = await session(request)
        letter = await visible_dead_letter(store, current.principal, _clean(dead_letter_id) or "")
        return page(request, "dead_letter.html", current, letter=dead_letter_detail(letter))

    @router.post("/dead-letters/{dead_letter_id}/replay", response_class=HTMLResponse)
    async def replay_one(request: Request, dead_letter_id: str) -> Response:
        """Replay one dead letter to its original topic (scope ``redrive``)."""
        current = await session(request)
        check_csrf(request, current)
        if not current.can_redrive:
            raise forbidden("replaying needs the 'redrive' scope")
        letter = await visible_dead_letter(store, current.principal, _clean(dead_letter_id) or "")
        if not letter.original_topic:
            raise Problem(409, "not-replayable", "Not replayable", "this dead letter names no original topic")
        await ops.replay([letter])
        return page(
            request, "_message.html", current, level="ok", text=f"Replayed to {letter.original_topic} (same event id)."
        )

    @router.post("/dead-letters/replay", response_class=HTMLResponse)
    async def replay_matching(request: Request) -> Response:
        """Replay every dead letter matching the page's filter, oldest first (scope ``redrive``)."""
        current = await session(request)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        check_csrf(request, current, fields.get("csrf"))
        if not current.can_redrive:
            raise forbidden("replaying needs the 'redrive' scope")
        stage = _clean(fields.get("stage"))
        if stage is not None and stage not in STAGES:
            raise Problem(400, "bad-request", "Bad request", f"unknown stage {stage!r}")
        reason = _clean(fields.get("reason"))
        filters = dead_letter_filter(
            current.principal,
            [stage] if stage else None,
            [reason] if reason else None,
            _clean(fields.get("tenant")),
            None,
            None,
            None,
        )
        letters = await store.dead_letters_in_order(filters, limit=1000)
        done = await ops.replay(letters)
        text = f"Replayed {len(done.replayed)} dead letter(s) to their original topics"
        if done.skipped:
            text += f"; {len(done.skipped)} name no original topic and were left"
        return page(request, "_message.html", current, level="ok", text=text + ".")

    @router.get("/connections", response_class=HTMLResponse)
    async def connections_page(request: Request) -> Response:
        """Connections: health, last success, error rate over 24 hours; control totals of a tenant and period."""
        current = await session(request)
        params = request.query_params
        health = await store.connections(tenants_of(current.principal))
        facets = await store.facets(tenants_of(current.principal))
        tenant = _clean(params.get("tenant")) or (facets["tenant"][0] if facets["tenant"] else None)
        if tenant is not None and not current.principal.sees(tenant):
            raise Problem(404, "not-found", "Not found", f"no tenant {tenant!r}")
        today = datetime.now(UTC).date()
        since = _day(params.get("since")) or datetime.combine(today.replace(day=1), time(), UTC)
        until = _day(params.get("until"), end=True)
        totals = await reconcile(store, tenant=tenant, since=since, until=until) if tenant else None
        return page(
            request,
            "connections.html",
            current,
            connections=[ConnectionOut.of(h, app.state.rate_limits.get(h.connection)) for h in health],
            tenants=facets["tenant"],
            tenant=tenant,
            since=since.date().isoformat(),
            until=(until - timedelta(days=1)).date().isoformat() if until else "",
            totals=totals,
            record_id=sync_record_id,
        )

    app.include_router(router)
