"""Mercoa: one webhook URL carries every ``eventType``; this router picks the mapper.

Event families and the canonical object each becomes (``shared/reference/sources.md`` §2.2):

=====================================================  =========================================
``invoice.*`` (created, updated, deleted, status.*)    bill (optional re-fetch, ``options.refetch``)
``invoice.bulk.*`` (``data: [{id, foreignId}]``)       bills, only when re-fetch is enabled
``entity.created|updated|status.changed|deleted``      vendor or customer
``counterparty.added|hidden|onboarding.completed``     vendors / customers (entities fetched)
``paymentMethod.created|updated|deleted``              vendor with masked bank accounts
``transaction.*``                                      payment
=====================================================  =========================================

Everything else (``invoice.email``, collections, OCR and payment-gateway jobs, entity
metadata) is skipped with a reason. Event names are matched case-insensitively, since Mercoa
mixes cases (``NEW`` vs ``new``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ledgerflow.contracts import CanonicalRecord
from ledgerflow.transformers.base import Enrichers, RawEvent, Route, SkipEvent, as_object, as_objects
from ledgerflow.transformers.mercoa.entity import enrich_counterparty, map_counterparty, map_entity, map_payment_method
from ledgerflow.transformers.mercoa.invoice import map_invoice
from ledgerflow.transformers.mercoa.transaction import map_transaction

__all__ = ["enrich_bulk", "enrich_invoice", "enrich_transaction", "map_bulk", "route"]

_INVOICE_SKIPPED = {"invoice.email", "invoice.collection.email.received"}
_ENTITY_EVENTS = {"entity.created", "entity.updated", "entity.status.changed", "entity.deleted"}
_COUNTERPARTY_EVENTS = {"counterparty.added", "counterparty.hidden", "counterparty.onboarding.completed"}


async def enrich_invoice(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Re-fetch the invoice (``GET /invoice/{id}``) when the tenant enabled ``options.refetch``.

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: the Mercoa API call failed after retries.

    """
    client = enrichers.get("mercoa").for_tenant(event.tenant)
    invoice = event.payload.get("invoice") if isinstance(event.payload, dict) else None
    if client is None or not client.refetch or not isinstance(invoice, dict) or not invoice.get("id"):
        return event
    if event.event_type == "invoice.deleted":
        return event  # a deleted invoice cannot be re-read; the webhook copy is the last state
    fresh = await client.invoice(str(invoice["id"]))
    return dataclasses.replace(event, enrichment={**event.enrichment, "invoice": fresh})


async def enrich_bulk(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Fetch every invoice a bulk event lists without an error, when re-fetch is enabled.

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: a Mercoa API call failed after retries.

    """
    client = enrichers.get("mercoa").for_tenant(event.tenant)
    if client is None or not client.refetch:
        return event
    items = as_objects(as_object(event.payload, "webhook body").get("data"), "data")
    ids = [str(item["id"]) for item in items if item.get("id") and not item.get("error")]
    invoices = [await client.invoice(invoice_id) for invoice_id in ids]
    return dataclasses.replace(event, enrichment={**event.enrichment, "invoices": invoices})


async def enrich_transaction(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Add the tenant's ``options.transaction_amount_unit`` (``minor``/``major``), when set.

    Only a transaction without invoices needs it (see :mod:`.transaction`, *Units*).
    """
    defaults = (enrichers.get("defaults").for_tenant(event.tenant) or {}).get("mercoa") or {}
    unit = defaults.get("transaction_amount_unit")
    if not unit:
        return event
    return dataclasses.replace(event, enrichment={**event.enrichment, "transaction_amount_unit": unit})


def map_bulk(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``invoice.bulk.*`` → one bill per re-fetched invoice.

    Raises:
        SkipEvent: re-fetch is not enabled (the bulk webhook carries only ids) or no invoice
            was created without error.
        contracts.ContractError / pydantic.ValidationError: as :func:`map_invoice`.

    """
    invoices = event.enrichment.get("invoices")
    if invoices is None:
        raise SkipEvent("Mercoa bulk event carries only invoice ids; enable options.refetch to map it")
    if not invoices:
        raise SkipEvent("Mercoa bulk event lists no invoice created without error")
    records: list[CanonicalRecord] = []
    for invoice in as_objects(invoices, "fetched invoices"):
        single = dataclasses.replace(event, enrichment={"invoice": invoice}, payload={"invoice": invoice})
        records += map_invoice(single)
    return records


def route(event: RawEvent) -> Route:
    """The route for a Mercoa event.

    Raises:
        SkipEvent: for event types ledgerflow does not map (counted, not an error).

    """
    kind = event.event_type
    lowered = kind.lower()
    if lowered.startswith("invoice.bulk."):
        return Route("bill", map_bulk, enrich_bulk)
    if lowered.startswith("invoice.") and lowered not in _INVOICE_SKIPPED and ".collection." not in lowered:
        return Route("bill", map_invoice, enrich_invoice)
    if lowered in _ENTITY_EVENTS:
        return Route("vendor", map_entity)
    if lowered in _COUNTERPARTY_EVENTS:
        return Route("vendor", map_counterparty, enrich_counterparty)
    if lowered.startswith("paymentmethod."):
        return Route("vendor", map_payment_method)
    if lowered.startswith("transaction."):
        return Route("payment", map_transaction, enrich_transaction)
    raise SkipEvent(f"Mercoa event type {kind!r} is not mapped")
