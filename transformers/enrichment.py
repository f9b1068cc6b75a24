"""Enrichment: the per-tenant source API clients that fetch what a thin or partial webhook only points to.

* ``ingenious.client.IngeniousClient`` — INGENIOUS.BUILD Public API: the ``custom_id`` of an
  accounting object (company, cost code, entity/GL account, project, cost type, business unit)
  when a webhook carried ``accounting_*_id`` but no ``accounting_*_custom_id`` (seed 000
  l.134–137: "Use the accounting_*_id and call the matching Get Public API endpoint"). Bearer
  access token (seed 000 l.14; API overview guide), at most 60 reads per minute (Public API
  changelog, ``sources.md`` §1.3) enforced with :class:`aiolimiter.AsyncLimiter`, answers cached
  in memory with a TTL (:class:`cachetools.TTLCache`).
* ``monite.client.MoniteClient`` — Monite Partner API: ``POST /auth/token`` (client credentials,
  seed 001 l.179–198), then ``GET /payables/{id}``, ``GET /payables/{id}/line_items``,
  ``GET /receivables/{id}``, ``GET /counterparts/{id}``, ``GET /payment_records/{id}`` with
  ``X-Monite-Entity-Id`` and ``X-Monite-Version`` (seed 001 l.223–228; ``sources.md`` §3.1).
* ``accessplanit.client.AccessplanitClient`` — accessplanit API v2: the account (customer) an
  invoice or a transaction names only by id (API-key header, seed 004; path configurable,
  ``sources.md`` §5.1).
* ``mercoa.client.MercoaClient`` — Mercoa API: ``GET /invoice/{id}`` and ``GET /entity/{id}`` with
  the API key as bearer token (``sources.md`` §2.3 "fetch-to-verify").

(each under ``ledgerflow.transformers``). Each is a
:class:`~ledgerflow.core.outbound.json_api.JsonApiClient`, the outbound toolkit's source-API
client: every request is retried with :mod:`stamina` a bounded number of times on 429 (honouring
``Retry-After``), 5xx and transport errors; then
:class:`~ledgerflow.core.outbound.json_api.EnrichmentError` says which call failed and why. 4xx
other than 429 fail at once.

:class:`EnricherSet` builds one client per (tenant, source) from the routing file's source
``options`` and is what routes' ``enrich`` functions receive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from ledgerflow.core.settings import ConfigError, Routing, SourceConfig
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.accessplanit.client import DEFAULT_ACCESSPLANIT_CUSTOMER_PATH, AccessplanitClient
from ledgerflow.transformers.ingenious.client import IngeniousClient
from ledgerflow.transformers.mercoa.client import MercoaClient
from ledgerflow.transformers.monite.client import MoniteClient

__all__ = ["EnricherSet", "TenantClients"]

C = TypeVar("C")


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
                if source == "ingenious":  # what INGENIOUS custom ids are (ingenious.mapping, "custom ids")
                    writes_back = config.writeback is not None and config.writeback.ingenious is not None
                    meaning = str(src.options.get("custom_ids") or ("erp_id" if writes_back else "number"))
                    if meaning not in ("erp_id", "number"):
                        raise ConfigError(
                            f"tenant {tenant!r}: sources.ingenious.options.custom_ids must be erp_id or number, "
                            f"not {meaning!r}"
                        )
                    if src.options.get("custom_ids") or writes_back:
                        # Only what the tenant set or writeback implies: absent means ``number`` to the mapper.
                        defaults.setdefault(tenant, {}).setdefault(source, {})["custom_ids"] = meaning
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
