"""Mercoa: one webhook URL carries every ``eventType``; this router picks the mapper.

Event families and the canonical object each becomes (``shared/reference/sources.md`` §2.2):
``invoice.*`` → bill. Other families are added by their own mapper modules.
"""

from __future__ import annotations

from transformers.base import RawEvent, Route, SkipEvent
from transformers.mercoa.invoice import map_invoice

__all__ = ["route"]

_INVOICE_SKIPPED = {"invoice.email", "invoice.collection.email.received"}


def route(event: RawEvent) -> Route:
    """The route for a Mercoa event.

    Raises:
        SkipEvent: for event types ledgerflow does not map (counted, not an error).

    """
    kind = event.event_type
    if kind.startswith("invoice.") and kind not in _INVOICE_SKIPPED and not kind.startswith("invoice.bulk."):
        return Route("bill", map_invoice)
    raise SkipEvent(f"Mercoa event type {kind!r} is not mapped")
