"""Monite: thin webhooks (``{id, action, entity_id, object_type, object_id|object}``) → fetched object → canonical.

``event_type`` is the webhook ``action`` (``payable.created``; legacy bodies ``<object_type>.<action>``
such as ``payable.create``; ``sources.md`` §3.1). Routes:

=========================================  ===========================================  =====================
action prefix                              fetched (``X-Monite-Entity-Id``)             canonical
=========================================  ===========================================  =====================
``payable.*``                              ``GET /payables/{id}`` + ``/line_items``     bill
``receivable.*``                           ``GET /receivables/{id}``                    invoice
``counterpart.*``                          ``GET /counterparts/{id}``                   vendor and/or customer
``payment_record.*``, ``payment.*``        ``GET /payment_records/{id}`` + its document payment
=========================================  ===========================================  =====================

Other object types (approvals, tags, OCR tasks, counterpart addresses…) are skipped. Monite
amounts are in minor units (seed 001; ``PayableResponseSchema`` "in minor units"): they become
major-unit ``Decimal`` by the currency's precision.
"""

from __future__ import annotations

from ledgerflow.transformers.base import RawEvent, Route, SkipEvent
from ledgerflow.transformers.monite.mapping import (
    enrich,
    map_counterpart,
    map_payable,
    map_payment_record,
    map_receivable,
)

__all__ = ["route"]

_SKIPPED_ACTIONS = {
    "payable.ocr_finished",
    "payable.multiple_approval_policies_matched",
    "payable.submitted_for_approval",
}


def route(event: RawEvent) -> Route:
    """The route for a Monite event by its ``action``.

    Raises:
        SkipEvent: object types and informational actions ledgerflow does not map.

    """
    action = event.event_type.strip().lower()
    object_type = action.split(".", 1)[0]
    if action in _SKIPPED_ACTIONS:
        raise SkipEvent(f"Monite action {action!r} is informational")
    if object_type == "payable":
        return Route("bill", map_payable, enrich)
    if object_type == "receivable":
        return Route("invoice", map_receivable, enrich)
    if object_type == "counterpart":
        return Route("vendor", map_counterpart, enrich)
    if object_type in {"payment_record", "payment"}:
        return Route("payment", map_payment_record, enrich)
    raise SkipEvent(f"Monite action {event.event_type!r} is not mapped")
