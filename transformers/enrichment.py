"""Enrichment clients: fetch what a thin or partial webhook only points to, per tenant.

* :class:`IngeniousClient` — INGENIOUS.BUILD Public API: the ``custom_id`` of an accounting
  object (company, cost code, entity/GL account, project, cost type, business unit) when a
  webhook carried ``accounting_*_id`` but no ``accounting_*_custom_id`` (seed 000 l.134–137:
  "Use the accounting_*_id and call the matching Get Public API endpoint"). Bearer access
  token (seed 000 l.14; API overview guide), at most 60 reads per minute (Public API changelog,
  ``sources.md`` §1.3) enforced with :class:`aiolimiter.AsyncLimiter`, answers cached in
  memory with a TTL (:class:`cachetools.TTLCache`).
* :class:`MoniteClient` — Monite Partner API: ``POST /auth/token`` (client credentials, seed
  001 l.179–198), then ``GET /payables/{id}``, ``GET /payables/{id}/line_items``,
  ``GET /receivables/{id}``, ``GET /counterparts/{id}``, ``GET /payment_records/{id}`` with
  ``X-Monite-Entity-Id`` and ``X-Monite-Version`` (seed 001 l.223–228; ``sources.md`` §3.1).
* :class:`AccessplanitClient` — accessplanit API v2: the account (customer) an invoice or a
  transaction names only by id (API-key header, seed 004; path configurable, ``sources.md`` §5.1).
* :class:`MercoaClient` — Mercoa API: ``GET /invoice/{id}`` and ``GET /entity/{id}`` with the
  API key as bearer token (``sources.md`` §2.3 "fetch-to-verify").

Every request is retried with :mod:`stamina` a bounded number of times on 429 (honouring
``Retry-After``), 5xx and transport errors; then :class:`EnrichmentError` says which call
failed and why. 4xx other than 429 fail at once.

:class:`EnricherSet` builds one client per (tenant, source) from the routing file's source
``options`` and is what routes' ``enrich`` functions receive.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import stamina
from aiolimiter import AsyncLimiter
from cachetools import TTLCache

from ledgerflow.core.outbound.client import parse_retry_after
from ledgerflow.core.settings import Routing, SourceConfig
from ledgerflow.core.state import StateStore

__all__ = [
    "DEFAULT_ACCESSPLANIT_CUSTOMER_PATH",
    "DEFAULT_INGENIOUS_PATHS",
    "AccessplanitClient",
    "EnricherSet",
    "EnrichmentError",
    "IngeniousClient",
    "JsonApiClient",
    "MercoaClient",
    "MoniteClient",
    "RetriableEnrichmentError",
    "TenantClients",
]

C = TypeVar("C")

MAX_RETRY_AFTER_SECONDS = 30.0
"""A ``Retry-After`` longer than this is capped, so a worker never parks for minutes."""


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


DEFAULT_INGENIOUS_PATHS: dict[str, str] = {
    "company": "/accounting-companies/{id}",
    "cost_code": "/accounting-cost-codes/{id}",
    "entity": "/accounting-entities/{id}",
    "project": "/accounting-projects/{id}",
    "cost_type": "/accounting-cost-types/{id}",
    "business_unit": "/accounting-business-units/{id}",
}
"""Public API path per accounting object kind. The exact paths are not in the public material
(``sources.md`` §1.1: Webhook Payloads reference NOT FOUND); override with
``options.paths`` in the routing file."""


class IngeniousClient(JsonApiClient):
    """INGENIOUS.BUILD Public API: accounting objects by id, for their ``custom_id``.

    Args:
        api_token: bearer access token (Company Settings → Access Tokens).
        paths: kind → path template with ``{id}``; defaults :data:`DEFAULT_INGENIOUS_PATHS`.
        reads_per_minute: published limit, 60 (``sources.md`` §1.3).
        cache_ttl: seconds an answer stays cached; ``cache_size`` entries at most.

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_token: str,
        *,
        paths: Mapping[str, str] | None = None,
        reads_per_minute: float = 60,
        cache_ttl: float = 300.0,
        cache_size: int = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(http, base_url, name="INGENIOUS", limiter=AsyncLimiter(reads_per_minute, 60), **kwargs)
        self._token = api_token
        self.paths = {**DEFAULT_INGENIOUS_PATHS, **(paths or {})}
        self._cache: TTLCache[tuple[str, str], tuple[str | None, str | None]] = TTLCache(
            maxsize=cache_size, ttl=cache_ttl
        )

    async def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"Bearer {self._token}"}

    async def accounting_object(self, kind: str, accounting_id: str) -> tuple[str | None, str | None]:
        """``(custom_id, name)`` of the accounting object ``kind`` (``company``, ``cost_code``…) with that INGENIOUS id.

        ``custom_id`` is the ERP identifier the user gave the object (seed 000 l.68–69), None when
        it has none; ``name`` is its display name (for a name lookup in the ERP), None when absent.
        The response may wrap the record in ``data`` (the Public API's unified entity shape);
        both are read. Answers are cached for ``cache_ttl`` seconds.

        Raises:
            KeyError: ``kind`` has no configured path.
            EnrichmentError: the API call failed.

        """
        key = (kind, accounting_id)
        if key in self._cache:
            return self._cache[key]
        body = await self.request("GET", self.paths[kind].format(id=accounting_id))
        record = body.get("data", body) if isinstance(body, dict) else {}
        if not isinstance(record, dict):
            record = {}
        custom, name = record.get("custom_id"), record.get("name")
        result = (
            str(custom) if custom not in (None, "") else None,
            str(name) if name not in (None, "") else None,
        )
        self._cache[key] = result
        return result

    async def custom_id(self, kind: str, accounting_id: str) -> str | None:
        """The ``custom_id`` of accounting object ``kind`` with INGENIOUS id ``accounting_id`` (None when unset).

        Raises:
            KeyError: ``kind`` has no configured path.
            EnrichmentError: the API call failed.

        """
        return (await self.accounting_object(kind, accounting_id))[0]


class MoniteClient(JsonApiClient):
    """Monite Partner API client for one entity, with its own client-credentials token.

    Args:
        client_id / client_secret: partner credentials for ``POST /auth/token``.
        entity_id: default ``X-Monite-Entity-Id`` (the webhook's ``entity_id`` overrides it).
        api_version: ``X-Monite-Version`` pinned (default ``2024-05-25``, ``sources.md`` §3.1).
        reference_cache_ttl: seconds a ledger account or tax rate stays cached (:meth:`get_reference`).

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        entity_id: str | None = None,
        api_version: str = "2024-05-25",
        reference_cache_ttl: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(http, base_url, name="Monite", **kwargs)
        self.client_id = client_id
        self._secret = client_secret
        self.entity_id = entity_id
        self.api_version = api_version
        self._token: str | None = None
        self._token_expiry = 0.0
        self._reference_cache: TTLCache[tuple[str, str], Any] = TTLCache(maxsize=10_000, ttl=reference_cache_ttl)

    async def _on_unauthorized(self) -> None:
        self._token = None

    async def _bearer(self) -> str:
        if self._token is None or time.monotonic() >= self._token_expiry:
            body = await JsonApiClient.request(
                self,
                "POST",
                "/auth/token",
                json={"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret},
                headers={"X-Monite-Version": self.api_version},
            )
            self._token = str(body["access_token"])
            self._token_expiry = time.monotonic() + max(float(body.get("expires_in", 1800)) - 60, 30)
        return self._token

    async def get(self, path: str, *, entity_id: str | None = None) -> Any:
        """``GET path`` for the entity (``entity_id`` or the configured one).

        Raises:
            EnrichmentError: the token or the object could not be fetched.

        """
        entity = entity_id or self.entity_id
        if not entity:
            raise EnrichmentError(f"Monite GET {path}: no entity id (webhook entity_id or options.entity_id)")
        headers = {
            "Authorization": f"Bearer {await self._bearer()}",
            "X-Monite-Version": self.api_version,
            "X-Monite-Entity-Id": entity,
        }
        return await self.request("GET", path, headers=headers)

    async def get_reference(self, path: str, *, entity_id: str | None = None) -> Any:
        """``GET path`` for reference data (ledger accounts, tax rates), cached per entity for the TTL.

        Raises:
            EnrichmentError: as :meth:`get` (failures are not cached).

        """
        key = (entity_id or self.entity_id or "", path)
        if key in self._reference_cache:
            return self._reference_cache[key]
        body = await self.get(path, entity_id=entity_id)
        self._reference_cache[key] = body
        return body


class MercoaClient(JsonApiClient):
    """Mercoa API client (bearer API key); ``refetch`` says whether invoices are re-read before mapping."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str, *, refetch: bool, **kwargs: Any) -> None:
        super().__init__(http, base_url, name="Mercoa", **kwargs)
        self._key = api_key
        self.refetch = refetch

    async def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"Bearer {self._key}"}

    async def invoice(self, invoice_id: str) -> Any:
        """``GET /invoice/{invoice_id}`` → the InvoiceResponse JSON.

        Raises:
            EnrichmentError: the call failed.

        """
        return await self.request("GET", f"/invoice/{invoice_id}")

    async def entity(self, entity_id: str) -> Any:
        """``GET /entity/{entity_id}`` → the EntityResponse JSON.

        Raises:
            EnrichmentError: the call failed.

        """
        return await self.request("GET", f"/entity/{entity_id}")


DEFAULT_ACCESSPLANIT_CUSTOMER_PATH = "/accounts/{id}"
"""API v2 path of the account an invoice is issued to. The v2 resource paths are not in the public
material (``sources.md`` §5.1: "Exact v2 base URL / resource paths … not captured"); override with
``options.customer_path``."""


class AccessplanitClient(JsonApiClient):
    """accessplanit API v2: the customer (account) an invoice or transaction names only by id.

    Args:
        api_key: the API key of an API user (seed 004: "log in and create an API key").
        header: header carrying it (``Authorization`` gets a ``Bearer`` prefix), default ``X-API-Key``.
        customer_path: path template with ``{id}``, default :data:`DEFAULT_ACCESSPLANIT_CUSTOMER_PATH`.
        cache_ttl: seconds an answer stays cached.

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        *,
        header: str = "X-API-Key",
        customer_path: str = DEFAULT_ACCESSPLANIT_CUSTOMER_PATH,
        cache_ttl: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(http, base_url, name="accessplanit", **kwargs)
        self._key = api_key
        self.header = header
        self.customer_path = customer_path
        self._cache: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=10_000, ttl=cache_ttl)

    async def _headers(self) -> dict[str, str]:
        value = f"Bearer {self._key}" if self.header.lower() == "authorization" else self._key
        return {"Accept": "application/json", self.header: value}

    async def customer(self, customer_id: str) -> dict[str, Any]:
        """The account record with id ``customer_id`` (an OData ``{"value": [record]}`` answer is unwrapped).

        Raises:
            EnrichmentError: the call failed, or the answer is not a JSON object.

        """
        if customer_id in self._cache:
            return self._cache[customer_id]
        body = await self.request("GET", self.customer_path.format(id=customer_id))
        if isinstance(body, dict) and isinstance(body.get("value"), list) and body["value"]:
            body = body["value"][0]
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            body = body["data"]
        if not isinstance(body, dict):
            raise EnrichmentError(f"accessplanit GET {self.customer_path}: the answer is not a JSON object")
        self._cache[customer_id] = body
        return body


@dataclass(frozen=True, slots=True)
class TenantClients(Generic[C]):
    """The clients of one source, one per tenant that configured it."""

    source: str
    clients: Mapping[str, C]

    def for_tenant(self, tenant: str) -> C | None:
        """The client of ``tenant``, or None when that tenant did not configure this source's API."""
        return self.clients.get(tenant)


def _secret(config: SourceConfig, key: str) -> str | None:
    value = config.options.get(key)
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


class EnricherSet:
    """Enrichment clients for every tenant of a routing file, by source name.

    Reads ``tenants.<t>.sources.<source>.options``:

    * ``ingenious``: ``api_base_url``, ``api_token`` [, ``paths``, ``cache_ttl_seconds``]
    * ``monite``: ``api_base_url``, ``client_id``, ``client_secret`` [, ``entity_id``, ``api_version``,
      ``cache_ttl_seconds`` for ledger accounts and tax rates]
    * ``mercoa``: ``api_base_url``, ``api_key``, ``refetch`` (bool)
    * ``accessplanit``: ``currency`` (ISO 4217 of records that carry none; ``for_tenant`` → str);
      with ``api_base_url`` and ``api_key`` [, ``api_key_header``, ``customer_path``] also an
      :class:`AccessplanitClient` under ``accessplanit_api``
    * any source: ``currency`` — the tenant's default for fields the source's documentation does not
      guarantee; ``field_names`` — the tenant's spelling of fields a mapper reads but the vendor's
      public material does not fix (INGENIOUS, accessplanit); ``mercoa``: ``transaction_amount_unit``
      (``minor``/``major``) for transactions without invoices
      (``defaults``: ``for_tenant`` → ``{source: {"currency": …, …}}``)

    A tenant without the options has no client for that source (routes then map what the
    webhook carried or skip with a reason). ``retry_attempts`` and ``retry_wait_max`` options
    tune the bounded retries. ``state`` is kept for clients that persist tokens or cursors.
    """

    def __init__(self, routing: Routing, http: httpx.AsyncClient, state: StateStore) -> None:
        self.routing = routing
        self.http = http
        self.state = state
        ingenious: dict[str, IngeniousClient] = {}
        monite: dict[str, MoniteClient] = {}
        mercoa: dict[str, MercoaClient] = {}
        accessplanit: dict[str, AccessplanitClient] = {}
        currencies: dict[str, str] = {}
        defaults: dict[str, dict[str, dict[str, Any]]] = {}
        for tenant, config in routing.tenants.items():
            for source, src in config.sources.items():
                if src.options.get("currency"):
                    defaults.setdefault(tenant, {}).setdefault(source, {})["currency"] = str(
                        src.options["currency"]
                    ).upper()
                if isinstance(src.options.get("field_names"), dict):
                    defaults.setdefault(tenant, {}).setdefault(source, {})["field_names"] = dict(
                        src.options["field_names"]
                    )
                for option in ("date_default", "timezone"):  # INGENIOUS records without data.date
                    if src.options.get(option):
                        defaults.setdefault(tenant, {}).setdefault(source, {})[option] = str(src.options[option])
                if src.options.get("transaction_amount_unit") in ("minor", "major"):
                    defaults.setdefault(tenant, {}).setdefault(source, {})["transaction_amount_unit"] = str(
                        src.options["transaction_amount_unit"]
                    )
                if source == "accessplanit" and src.options.get("currency"):
                    currencies[tenant] = str(src.options["currency"]).upper()
                base = src.options.get("api_base_url")
                if not base:
                    continue
                retry: dict[str, Any] = {
                    "attempts": int(src.options.get("retry_attempts", 4)),
                    "wait_max": float(src.options.get("retry_wait_max", 5.0)),
                    "wait_initial": float(src.options.get("retry_wait_initial", 0.2)),
                }
                if source == "ingenious" and (token := _secret(src, "api_token")):
                    ingenious[tenant] = IngeniousClient(
                        http,
                        str(base),
                        token,
                        paths=src.options.get("paths"),
                        cache_ttl=float(src.options.get("cache_ttl_seconds", 300)),
                        **retry,
                    )
                elif (
                    source == "monite" and (cid := _secret(src, "client_id")) and (sec := _secret(src, "client_secret"))
                ):
                    monite[tenant] = MoniteClient(
                        http,
                        str(base),
                        cid,
                        sec,
                        entity_id=src.options.get("entity_id"),
                        api_version=str(src.options.get("api_version", "2024-05-25")),
                        reference_cache_ttl=float(src.options.get("cache_ttl_seconds", 300)),
                        **retry,
                    )
                elif source == "mercoa" and (key := _secret(src, "api_key")):
                    mercoa[tenant] = MercoaClient(
                        http, str(base), key, refetch=bool(src.options.get("refetch", False)), **retry
                    )
                elif source == "accessplanit" and (key := _secret(src, "api_key")):
                    accessplanit[tenant] = AccessplanitClient(
                        http,
                        str(base),
                        key,
                        header=str(src.options.get("api_key_header", "X-API-Key")),
                        customer_path=str(src.options.get("customer_path", DEFAULT_ACCESSPLANIT_CUSTOMER_PATH)),
                        cache_ttl=float(src.options.get("cache_ttl_seconds", 300)),
                        **retry,
                    )
        self._sets: dict[str, TenantClients[Any]] = {
            "ingenious": TenantClients("ingenious", ingenious),
            "monite": TenantClients("monite", monite),
            "mercoa": TenantClients("mercoa", mercoa),
            "accessplanit": TenantClients("accessplanit", currencies),
            "accessplanit_api": TenantClients("accessplanit", accessplanit),
            "defaults": TenantClients("defaults", defaults),
        }

    def get(self, name: str) -> Any:
        """The :class:`TenantClients` named ``name``.

        Names: ``ingenious``, ``monite``, ``mercoa``, ``accessplanit``, ``accessplanit_api``, ``defaults``.

        Raises:
            KeyError: no enrichment exists for ``name``.

        """
        return self._sets[name]
