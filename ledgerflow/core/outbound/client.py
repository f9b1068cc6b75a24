"""``ErpClient``: the HTTP side every ERP connector shares.

One :class:`ErpClient` per ERP connection wraps the runtime's shared ``httpx.AsyncClient`` and adds:

* a per-connection rate limit (``aiolimiter.AsyncLimiter``, requests per minute) and a
  concurrency cap (``asyncio.Semaphore``), defaults from the vendor's published limits,
  overridable by ``config.options["rate_limit_per_minute"]`` / ``["max_concurrency"]``;
* authentication through a :class:`RequestAuth` (OAuth token managers in
  :mod:`ledgerflow.core.outbound.oauth`); one re-authentication when the ERP answers 401 with a token
  that was accepted before (revoked or expired early), never more;
* metrics ``ledgerflow_erp_requests_total`` and ``ledgerflow_erp_request_duration_seconds``;
* the :class:`RequestGuard` of the current context (:data:`REQUEST_GUARD`), if any: asked before
  each request (it may wait, or refuse with a ``RetriableError`` when the connection's budget is
  spent) and shown each response (its rate-limit headers); the connector fleet sets one per
  connection (:mod:`ledgerflow.connectors.limits`);
* the mapping of outcomes to :class:`~ledgerflow.core.outbound.errors.RetriableError` /
  :class:`~ledgerflow.core.outbound.errors.PermanentError` through an :class:`ErrorTable` (HTTP status and
  vendor error codes), with the vendor's message pulled out by a per-ERP ``extract`` function.

The client never retries: the connector runtime retries whole ``handle()`` calls, honouring
``RetriableError.retry_after`` (parsed from ``Retry-After``: delta-seconds or an HTTP-date).

It also holds the JSON helpers connectors use for money: :func:`dumps_json` writes ``Decimal``
as an exact JSON number (never via float) and :func:`loads_json` reads numbers with a fraction
back as ``Decimal``.

Usage::

    client = ErpClient.for_connection(
        http, erp="xero", connection=name, config=config, base_url=base,
        default_rate_per_minute=60, default_concurrency=5,
        extract=xero_error, errors=XERO_ERRORS, auth=token_manager,
    )
    response = await client.request("PUT", "/Invoices", operation="bill.create", json_body=body)

Secrets are never logged: request headers are not logged at all, and error messages carry the
vendor's message and the request path only.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
import orjson
from aiolimiter import AsyncLimiter

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.metrics import ERP_REQUEST_DURATION, ERP_REQUESTS
from ledgerflow.core.outbound.errors import ConnectorError, PermanentError, RetriableError
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "DEFAULT_ERRORS",
    "REQUEST_GUARD",
    "ErpClient",
    "ErrorRule",
    "ErrorTable",
    "RequestAuth",
    "RequestGuard",
    "VendorError",
    "default_extract",
    "dumps_json",
    "loads_json",
    "parse_retry_after",
]


# --------------------------------------------------------------------------------------------
# JSON with exact decimals


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError(f"cannot serialise non-finite decimal {obj!r} as JSON")
        return orjson.Fragment(format(obj, "f"))
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot serialise {type(obj).__name__} as JSON")


def dumps_json(obj: Any) -> bytes:
    """Serialise ``obj`` to JSON bytes; ``Decimal`` becomes an exact JSON number (``Decimal("1.10")`` → ``1.10``).

    Dates and datetimes become ISO 8601 strings. Floats are written as orjson writes them; callers
    keep money in ``Decimal`` so it never passes through float.

    Raises:
        TypeError: for a non-finite decimal or a type JSON cannot carry.

    """
    return orjson.dumps(obj, default=_json_default)


def loads_json(data: bytes | str) -> Any:
    """Parse JSON, reading numbers with a fraction or exponent as ``Decimal`` (integers stay ``int``).

    Raises:
        ValueError: the input is not JSON.

    """
    return json.loads(data, parse_float=Decimal)


# --------------------------------------------------------------------------------------------
# Error table


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one HTTP status or vendor error code is classified: retriable or not, and the stable error code."""

    retriable: bool
    code: ErrorCode


@dataclass(frozen=True, slots=True)
class VendorError:
    """What a per-ERP ``extract`` function found in an error response: message and vendor code (if any)."""

    message: str
    vendor_code: str | None = None


@dataclass(frozen=True)
class ErrorTable:
    """Classification of failed responses: by vendor error code first, then by HTTP status.

    Statuses not listed fall back to: 5xx → retriable ``http.5xx``; other 4xx → permanent
    ``erp.validation``. ``vendor_codes`` keys are the ERP's own codes as strings (QuickBooks
    ``"5010"``, Xero ``ErrorNumber`` ``"10"``…).
    """

    statuses: Mapping[int, ErrorRule] = field(default_factory=dict)
    vendor_codes: Mapping[str, ErrorRule] = field(default_factory=dict)

    def classify(self, status: int, vendor_code: str | None) -> ErrorRule:
        """The rule for a response with ``status`` and optional ``vendor_code``."""
        if vendor_code is not None and vendor_code in self.vendor_codes:
            return self.vendor_codes[vendor_code]
        if status in self.statuses:
            return self.statuses[status]
        if status >= 500:
            return ErrorRule(True, ErrorCode.HTTP_5XX)
        return ErrorRule(False, ErrorCode.ERP_VALIDATION)

    def merged(self, other: ErrorTable) -> ErrorTable:
        """A table with ``other``'s entries taking precedence over this one's."""
        return ErrorTable({**self.statuses, **other.statuses}, {**self.vendor_codes, **other.vendor_codes})

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ErrorTable:
        """Apply ``config.options["error_overrides"]``.

        Keys are ``"http.<status>"`` (e.g. ``"http.409"``) or a vendor code (``"6240"``); values are
        ``"retriable"``, ``"permanent"`` or ``{"retriable": bool, "code": str}``. Example YAML::

            options:
              error_overrides: {"http.409": retriable, "6240": {retriable: false, code: erp.duplicate}}

        Raises:
            ValueError: an override key or value has the wrong shape.

        """
        if not overrides:
            return self
        statuses = dict(self.statuses)
        vendor = dict(self.vendor_codes)
        for key, value in overrides.items():
            key = str(key)
            if key.startswith("http."):
                try:
                    status = int(key.removeprefix("http."))
                except ValueError:
                    raise ValueError(f"error override key {key!r}: expected http.<status>") from None
                statuses[status] = _override_rule(key, value, self.classify(status, None))
            else:
                base = vendor.get(key, ErrorRule(False, ErrorCode.ERP_VALIDATION))
                vendor[key] = _override_rule(key, value, base)
        return ErrorTable(statuses, vendor)


def _override_rule(key: str, value: Any, base: ErrorRule) -> ErrorRule:
    if value in ("retriable", "permanent"):
        retriable = value == "retriable"
        flipped = ErrorCode.ERP_RETRIABLE if retriable else ErrorCode.ERP_VALIDATION
        return ErrorRule(retriable, base.code if base.retriable == retriable else flipped)
    if isinstance(value, Mapping) and isinstance(value.get("retriable"), bool):
        code = value.get("code", base.code)
        if code not in ErrorCode._value2member_map_:
            raise ValueError(f"error override {key!r}: code {code!r} is not one of {', '.join(ErrorCode)}")
        return ErrorRule(value["retriable"], ErrorCode(code))
    raise ValueError(f"error override {key!r}: expected 'retriable', 'permanent' or {{retriable: bool, code: str}}")


DEFAULT_ERRORS = ErrorTable(
    statuses={
        408: ErrorRule(True, ErrorCode.HTTP_408),
        429: ErrorRule(True, ErrorCode.HTTP_429),
        500: ErrorRule(True, ErrorCode.HTTP_5XX),
        502: ErrorRule(True, ErrorCode.HTTP_5XX),
        503: ErrorRule(True, ErrorCode.HTTP_5XX),
        504: ErrorRule(True, ErrorCode.HTTP_5XX),
        401: ErrorRule(False, ErrorCode.AUTH_REJECTED),
        403: ErrorRule(False, ErrorCode.AUTH_REJECTED),
    }
)
"""The baseline every ERP table extends (see the module docstring)."""


def default_extract(response: httpx.Response) -> VendorError:
    """Best-effort message from an error body: JSON ``message``/``error_description``/``error``/``detail``, else text.

    Per-ERP connectors pass their own extractor (QuickBooks ``Fault``, Xero ``Elements``…).
    """
    try:
        body = loads_json(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "Message", "error_description", "detail", "error", "title"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return VendorError(value[:1000])
    text = response.text.strip()
    return VendorError(text[:1000] or f"HTTP {response.status_code}")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Returns None when absent or unparseable; never negative.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


# --------------------------------------------------------------------------------------------
# Client


class RequestAuth(Protocol):
    """Authenticates outgoing requests of one connection (see :mod:`ledgerflow.core.outbound.oauth`).

    ``apply`` sets headers on the built request (it may sign method and URL, e.g. OAuth 1.0a
    TBA); ``invalidate`` forgets a cached credential the ERP rejected, so the next ``apply``
    fetches a fresh one. Both raise :class:`~ledgerflow.core.outbound.errors.ConnectorError` on failure.
    """

    async def apply(self, request: httpx.Request) -> None:
        """Add credentials to ``request`` (in place)."""

    async def invalidate(self) -> None:
        """Drop the cached credential so the next :meth:`apply` obtains a new one."""


class RequestGuard(Protocol):
    """Paces one connection's requests from outside the client (the connector fleet's per-connection limits).

    ``before`` runs before each request is sent: it may wait, or raise a
    :class:`~ledgerflow.core.outbound.errors.RetriableError` to refuse sending (the budget is spent
    for longer than the caller may wait); ``after`` sees each response (e.g. ``X-MinLimit-Remaining``,
    ``X-DayLimit-Remaining``, ``Retry-After`` on a 429).
    """

    async def before(self) -> None:
        """Wait for the connection's turn, or raise ``RetriableError`` (not sent)."""

    def after(self, response: httpx.Response) -> None:
        """Learn from one response of the connection."""


REQUEST_GUARD: ContextVar[RequestGuard | None] = ContextVar("ledgerflow_request_guard", default=None)
"""The guard of the requests made in the current context (None: only the client's own limits)."""


def _status_class(status: int) -> str:
    if status == 429:
        return "429"
    return f"{status // 100}xx"


class ErpClient:
    """HTTP access to one ERP connection with rate limit, concurrency cap, auth, metrics and error mapping.

    Args:
        http: the shared ``httpx.AsyncClient`` (owned by the runtime).
        erp: ERP kind (metrics label), e.g. ``"quickbooks"``.
        connection: connection name (metrics label, rate-limit scope).
        base_url: prefix of every request path (no trailing slash needed).
        rate_per_minute: requests allowed per 60 s (``aiolimiter`` leaky bucket).
        max_concurrency: requests in flight at once.
        burst: requests let through at once after a pause (default ``max_concurrency``); 1 keeps
            every rolling minute at or under ``rate_per_minute``, as vendors that count calls in
            a sliding window (Xero, Intuit) need: a burst of ``b`` on top of the rate exceeds
            their window by ``b - 1`` calls in the first minute.
        auth: credentials provider, or None.
        extract: pulls the vendor's message and code out of an error response.
        errors: classification table (start from :data:`DEFAULT_ERRORS`).
        timeout: per-request timeout in seconds (None = the shared client's).
        default_headers: headers on every request (e.g. ``Accept``, Xero ``xero-tenant-id``).

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        erp: str,
        connection: str,
        base_url: str,
        rate_per_minute: float,
        max_concurrency: int,
        auth: RequestAuth | None = None,
        extract: Callable[[httpx.Response], VendorError] = default_extract,
        errors: ErrorTable = DEFAULT_ERRORS,
        timeout: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        burst: int | None = None,
    ) -> None:
        if rate_per_minute <= 0 or max_concurrency < 1:
            raise ValueError("rate_per_minute must be > 0 and max_concurrency ≥ 1")
        self.http = http
        self.erp = erp
        self.connection = connection
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.extract = extract
        self.errors = errors
        self.timeout = timeout
        self.default_headers = dict(default_headers or {})
        self.rate_per_minute = rate_per_minute
        self.max_concurrency = max_concurrency
        # Bucket of up to `burst` (default max_concurrency) requests, refilled at rate_per_minute.
        burst_size = float(burst) if burst is not None else float(max_concurrency)
        bucket = max(1.0, min(burst_size, rate_per_minute))
        self.limiter = AsyncLimiter(bucket, 60.0 * bucket / rate_per_minute)
        self.semaphore = asyncio.Semaphore(max_concurrency)

    @classmethod
    def for_connection(
        cls,
        http: httpx.AsyncClient,
        *,
        erp: str,
        connection: str,
        config: ConnectionConfig,
        base_url: str,
        default_rate_per_minute: float,
        default_concurrency: int,
        errors: ErrorTable = DEFAULT_ERRORS,
        auth: RequestAuth | None = None,
        extract: Callable[[httpx.Response], VendorError] = default_extract,
        default_headers: Mapping[str, str] | None = None,
    ) -> ErpClient:
        """Build a client for ``config``, honouring its options.

        Options read: ``rate_limit_per_minute``, ``rate_limit_burst``, ``max_concurrency``, ``timeout_seconds``,
        ``error_overrides`` (see :meth:`ErrorTable.with_overrides`).

        Raises:
            ValueError: an option has the wrong type or range.

        """
        opts = config.options
        return cls(
            http,
            erp=erp,
            connection=connection,
            base_url=base_url,
            rate_per_minute=float(opts.get("rate_limit_per_minute", default_rate_per_minute)),
            max_concurrency=int(opts.get("max_concurrency", default_concurrency)),
            auth=auth,
            extract=extract,
            errors=errors.with_overrides(opts.get("error_overrides")),
            timeout=float(opts["timeout_seconds"]) if opts.get("timeout_seconds") is not None else None,
            default_headers=default_headers,
            burst=int(opts["rate_limit_burst"]) if opts.get("rate_limit_burst") is not None else None,
        )

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (already absolute URLs pass through)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request and return the response if it succeeded.

        Args:
            method: HTTP method.
            path: path below ``base_url`` (or an absolute URL).
            operation: metrics label, e.g. ``"bill.create"``.
            params: query parameters.
            json_body: body, serialised with :func:`dumps_json` (Decimal-exact).
            content: a JSON body already serialised (e.g. bytes that were signed); not with ``json_body``.
            headers: extra headers for this request.
            ok: extra non-2xx statuses the caller handles itself (e.g. 404 on a look-up).

        Returns:
            The response (2xx or a status in ``ok``).

        Raises:
            RetriableError: 429 (``retry_after`` from ``Retry-After``), 408, 5xx, timeouts
                (``http.timeout``), connection failures (``http.transport``), or as the table says.
            PermanentError: 401/403 (``auth.rejected``), other 4xx (``erp.validation``) with the
                vendor's message, or as the table says.

        """
        if json_body is not None:
            if content is not None:
                raise ValueError("pass json_body or content, not both")
            content = dumps_json(json_body)
        merged = {**self.default_headers, **(headers or {})}
        if content is not None:
            merged.setdefault("Content-Type", "application/json")
        merged.setdefault("Accept", "application/json")
        reauthenticated = False
        while True:
            response = await self._send(method, path, operation, params, content, merged)
            if response.status_code == 401 and self.auth is not None and not reauthenticated:
                # The token was accepted before; it may have been revoked or expired early.
                reauthenticated = True
                await self.auth.invalidate()
                continue
            if response.is_success or response.status_code in ok:
                return response
            raise self.error_for(response)

    async def _send(
        self,
        method: str,
        path: str,
        operation: str,
        params: Mapping[str, str | int] | None,
        content: bytes | None,
        headers: Mapping[str, str],
    ) -> httpx.Response:
        request = self.http.build_request(
            method,
            self.url(path),
            params=params,
            content=content,
            headers=headers,
            timeout=self.timeout if self.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if self.auth is not None:
            await self.auth.apply(request)
        guard = REQUEST_GUARD.get()
        if guard is not None:
            await guard.before()
        async with self.semaphore, self.limiter:
            started = time.perf_counter()
            try:
                response = await self.http.send(request)
            except httpx.TimeoutException as exc:
                self._observe(operation, "error", started)
                raise RetriableError(
                    ErrorCode.HTTP_TIMEOUT, f"{self.erp} {method} {request.url.path}: timed out ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                self._observe(operation, "error", started)
                raise RetriableError(
                    ErrorCode.HTTP_TRANSPORT, f"{self.erp} {method} {request.url.path}: {type(exc).__name__}: {exc}"
                ) from exc
            self._observe(operation, _status_class(response.status_code), started)
            if guard is not None:
                guard.after(response)
            return response

    def _observe(self, operation: str, status: str, started: float) -> None:
        ERP_REQUESTS.labels(self.erp, self.connection, operation, status).inc()
        ERP_REQUEST_DURATION.labels(self.erp, self.connection, operation).observe(time.perf_counter() - started)

    def error_for(self, response: httpx.Response) -> ConnectorError:
        """The connector error for a failed ``response`` per :attr:`errors` (also usable on 200-with-fault bodies)."""
        found = self.extract(response)
        rule = self.errors.classify(response.status_code, found.vendor_code)
        message = f"{self.erp} {response.request.method} {response.request.url.path} → {response.status_code}: "
        message += found.message
        if rule.retriable:
            return RetriableError(
                rule.code,
                message,
                http_status=response.status_code,
                vendor_code=found.vendor_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return PermanentError(rule.code, message, http_status=response.status_code, vendor_code=found.vendor_code)
