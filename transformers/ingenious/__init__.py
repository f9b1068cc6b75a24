"""INGENIOUS.BUILD: one webhook URL per object type; the route object (``object_hint``) picks the mapper.

Objects (seed 000 l.4–9) and their canonical types: ``vendor_invoice`` → bill,
``vendor_contract`` → purchase_order, ``vendor_contract_change`` → purchase_order_change,
``budget`` → budget, ``budget_change`` → budget_change. All routes enrich missing accounting
``custom_id`` values through the Public API (:func:`ledgerflow.transformers.ingenious.mapping.enrich`).
"""

from __future__ import annotations

from ledgerflow.transformers.base import RawEvent, Route
from ledgerflow.transformers.ingenious.mapping import (
    enrich,
    map_budget,
    map_budget_change,
    map_vendor_contract,
    map_vendor_contract_change,
    map_vendor_invoice,
    unknown,
)

__all__ = ["ROUTES", "route"]

ROUTES: dict[str, Route] = {
    "vendor_invoice": Route("bill", map_vendor_invoice, enrich),
    "vendor_contract": Route("purchase_order", map_vendor_contract, enrich),
    "vendor_contract_change": Route("purchase_order_change", map_vendor_contract_change, enrich),
    "budget": Route("budget", map_budget, enrich),
    "budget_change": Route("budget_change", map_budget_change, enrich),
}
"""Route object (``object_hint``, also accepted with dashes or plural) → route."""


def route(event: RawEvent) -> Route:
    """The route for an INGENIOUS event, by its route object.

    Raises:
        SkipEvent: the route object is unknown.

    """
    hint = (event.object_hint or event.event_type.split(".", 1)[0]).strip().lower().replace("-", "_")
    found = ROUTES.get(hint) or ROUTES.get(hint.removesuffix("s"))
    if found is None:
        raise unknown(event)
    return found
