"""INGENIOUS.BUILD Public API client: accounting objects by id (``custom_id``, name; seed 000), and writes.

The writes (find by a field, create, update) are the source writer's
(:mod:`ledgerflow.transformers.ingenious.writer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
from aiolimiter import AsyncLimiter
from cachetools import TTLCache

from ledgerflow.core.outbound.json_api import JsonApiClient

__all__ = ["DEFAULT_INGENIOUS_PATHS", "IngeniousClient"]

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
        writes_per_minute: published limit of writes (POST, PATCH…), 30 (``sources.md`` §1.3), on top of it.
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
        writes_per_minute: float = 30,
        cache_ttl: float = 300.0,
        cache_size: int = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(http, base_url, name="INGENIOUS", limiter=AsyncLimiter(reads_per_minute, 60), **kwargs)
        self._token = api_token
        self._writes = AsyncLimiter(writes_per_minute, 60)
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

    async def request(
        self, method: str, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """As :meth:`JsonApiClient.request`; a write also waits for the write budget (30 a minute).

        Raises:
            EnrichmentError: as :meth:`JsonApiClient.request`.
        """
        if method != "GET":
            await self._writes.acquire()
        return await super().request(method, path, json=json, headers=headers)

    # Writes (the source writer, ``ledgerflow.transformers.ingenious.writer``): paths and body
    # field names are the writer's, configurable; see its module docstring for the ASSUMPTIONS.

    @staticmethod
    def _records(body: Any) -> list[dict[str, Any]]:
        """The records of a list answer: ``{"data": [...]}`` or a bare list (anything else: none)."""
        items = body.get("data", []) if isinstance(body, dict) else body
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    @staticmethod
    def _record(body: Any) -> dict[str, Any]:
        """The record of a single-object answer: ``{"data": {...}}`` or the bare object."""
        record = body.get("data", body) if isinstance(body, dict) else {}
        return record if isinstance(record, dict) else {}

    async def find(self, list_path: str, field: str, value: str) -> dict[str, Any] | None:
        """``GET list_path?<field>=<value>`` → the first record whose ``field`` equals ``value``, or None.

        The answer is filtered here too (an API that ignores the query parameter returns every
        record; only an exact match counts).

        Raises:
            EnrichmentError: the API call failed.
        """
        body = await self.request("GET", f"{list_path}?{urlencode({field: value})}")
        for record in self._records(body):
            if str(record.get(field, "")) == value:
                return record
        return None

    async def create(self, list_path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST list_path`` with ``body`` → the created record.

        Raises:
            EnrichmentError: the API call failed.
        """
        return self._record(await self.request("POST", list_path, json=dict(body)))

    async def update(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH path`` with ``body`` → the updated record.

        Raises:
            EnrichmentError: the API call failed.
        """
        return self._record(await self.request("PATCH", path, json=dict(body)))
