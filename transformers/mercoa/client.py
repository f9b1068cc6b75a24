"""Mercoa API client: invoices and entities re-read before mapping (``sources.md`` §2.3)."""

from __future__ import annotations

from typing import Any

import httpx

from ledgerflow.core.outbound.json_api import JsonApiClient

__all__ = ["MercoaClient"]


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

    async def update_invoice(self, invoice_id: str, body: dict[str, Any]) -> Any:
        """``POST /invoice/{invoice_id}`` with an ``InvoiceUpdateRequest`` body → the InvoiceResponse JSON.

        Mercoa's invoice update (``mercoa-finance`` SDK ``InvoiceClient.UpdateAsync``): every field
        optional; the source writer sends ``status`` (``PAID``) and ``settlementDate``.

        Raises:
            EnrichmentError: the call failed.

        """
        return await self.request("POST", f"/invoice/{invoice_id}", json=body)
