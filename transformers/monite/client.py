"""Monite Partner API client: payables, receivables, counterparts, payment records, ledger accounts (seed 001)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from cachetools import TTLCache

from ledgerflow.core.outbound.json_api import EnrichmentError, JsonApiClient

__all__ = ["MoniteClient"]


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

    async def post(self, path: str, body: dict[str, Any] | None, *, entity_id: str | None = None) -> Any:
        """``POST path`` with ``body`` for the entity (``entity_id`` or the configured one).

        Used by the source writer for ``POST /payables/{id}/mark_as_paid`` (body ``CommentPayload``)
        and ``…/mark_as_partially_paid`` (body ``PartiallyPaidPayload``), Monite Partner API 2024-05-25.

        Raises:
            EnrichmentError: no entity id, or the token or the call failed.

        """
        entity = entity_id or self.entity_id
        if not entity:
            raise EnrichmentError(f"Monite POST {path}: no entity id (options.entity_id)")
        headers = {
            "Authorization": f"Bearer {await self._bearer()}",
            "X-Monite-Version": self.api_version,
            "X-Monite-Entity-Id": entity,
        }
        return await self.request("POST", path, json=body, headers=headers)
