"""accessplanit API v2 client: the account (customer) an invoice or transaction names by id (seed 004)."""

from __future__ import annotations

from typing import Any

import httpx
from cachetools import TTLCache

from ledgerflow.core.outbound.json_api import EnrichmentError, JsonApiClient

__all__ = ["DEFAULT_ACCESSPLANIT_CUSTOMER_PATH", "AccessplanitClient"]

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
