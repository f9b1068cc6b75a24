"""INGENIOUS.BUILD Public API client: accounting objects by id, for their ``custom_id`` and name (seed 000)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
