"""A retrying JSON client for the source systems' APIs (enrichment, pollers).

Part of the one outbound toolkit beside :mod:`~ledgerflow.core.outbound.client` (the ERP client) and
:mod:`~ledgerflow.core.outbound.oauth`: :class:`JsonApiClient` sends JSON requests to one base URL,
retries 429, 5xx and transport errors a bounded number of times with :mod:`stamina` (honouring
``Retry-After`` through :func:`~ledgerflow.core.outbound.client.parse_retry_after`, capped at
:data:`MAX_RETRY_AFTER_SECONDS`), and raises :class:`EnrichmentError` naming the call when it gives
up. Per-source clients (``ledgerflow.transformers.<source>.client``) add authentication and paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import httpx
import stamina
from aiolimiter import AsyncLimiter

from ledgerflow.core.outbound.client import parse_retry_after

__all__ = [
    "MAX_RETRY_AFTER_SECONDS",
    "EnrichmentError",
    "JsonApiClient",
    "RetriableEnrichmentError",
    "counted_attempts",
]


MAX_RETRY_AFTER_SECONDS = 30.0
"""A ``Retry-After`` longer than this is capped, so a worker never parks for minutes."""


_ATTEMPTS: ContextVar[list[int] | None] = ContextVar("json_api_attempts", default=None)


@contextlib.contextmanager
def counted_attempts() -> Iterator[list[int]]:
    """Count the HTTP attempts (first tries and retries) :class:`JsonApiClient` s make in this block.

    The count is ``counter[0]`` of the yielded list; it covers the current task only (a context
    variable), so concurrent writes on one shared client each count their own.
    """
    counter = [0]
    token = _ATTEMPTS.set(counter)
    try:
        yield counter
    finally:
        _ATTEMPTS.reset(token)


class EnrichmentError(RuntimeError):
    """A source API call failed for good (4xx, or retries exhausted); the message names the call."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetriableEnrichmentError(EnrichmentError):
    """A source API call failed transiently (429, 5xx, network); ``retry_after`` in seconds if sent."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header, capped at :data:`MAX_RETRY_AFTER_SECONDS`; None if absent.

    Parsed by the outbound toolkit (:func:`ledgerflow.core.outbound.client.parse_retry_after`:
    delta-seconds or an HTTP-date; NaN, infinite and unparseable values are None, a date without a
    zone is UTC), as for the ERPs.
    """
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECONDS)


def _backoff(exc: Exception) -> bool | float:
    """Stamina hook: retry transient failures, after ``Retry-After`` when the API sent one."""
    if isinstance(exc, RetriableEnrichmentError):
        return exc.retry_after if exc.retry_after is not None else True
    return False


class JsonApiClient:
    """JSON GET/POST against one base URL with bounded retries; subclasses add auth and paths.

    Args:
        http: shared ``httpx.AsyncClient`` (connection pool, timeouts).
        base_url: API root, e.g. ``https://api.sandbox.monite.com/v1``.
        name: label used in error messages (``INGENIOUS``, ``Monite``…).
        attempts: total tries per call (first try included).
        wait_initial / wait_max: exponential backoff bounds in seconds when no ``Retry-After``.
        limiter: optional rate limiter acquired before each attempt.

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        name: str,
        attempts: int = 4,
        wait_initial: float = 0.2,
        wait_max: float = 5.0,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.attempts = attempts
        self.wait_initial = wait_initial
        self.wait_max = wait_max
        self.limiter = limiter

    async def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    async def _on_unauthorized(self) -> None:
        """Hook: drop cached credentials after a 401 (token expired)."""

    async def request(
        self, method: str, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """Send one request with retries and return the decoded JSON body.

        Raises:
            EnrichmentError: on a non-retriable 4xx, or once all attempts failed (the last
                transient error is the cause).

        """
        url = f"{self.base_url}{path}"
        what = f"{self.name} {method} {path}"
        try:
            async for attempt in stamina.retry_context(
                on=_backoff,
                attempts=self.attempts,
                timeout=None,
                wait_initial=self.wait_initial,
                wait_max=self.wait_max,
                wait_jitter=0.0,
            ):
                with attempt:
                    if (counter := _ATTEMPTS.get()) is not None:
                        counter[0] += 1
                    if self.limiter is not None:
                        await self.limiter.acquire()
                    merged = {**(await self._headers()), **(headers or {})}
                    try:
                        response = await self.http.request(method, url, json=json, headers=merged)
                    except httpx.TransportError as exc:
                        raise RetriableEnrichmentError(f"{what}: {type(exc).__name__}: {exc}") from exc
                    if response.status_code == 401:
                        await self._on_unauthorized()
                    if response.status_code == 429 or response.status_code >= 500:
                        raise RetriableEnrichmentError(
                            f"{what} answered {response.status_code}",
                            status=response.status_code,
                            retry_after=_retry_after(response),
                        )
                    if response.status_code >= 400:
                        raise EnrichmentError(
                            f"{what} answered {response.status_code}: {response.text[:300]}",
                            status=response.status_code,
                        )
                    return response.json()
        except RetriableEnrichmentError as exc:
            raise EnrichmentError(f"{exc} (gave up after {self.attempts} attempts)", status=exc.status) from exc
        raise EnrichmentError(f"{what}: no attempt was made")  # pragma: no cover - attempts >= 1
