"""accessplanit: one URL per API v2 resource; ``object_hint`` is the resource, the HTTP method the action.

``invoices`` → invoice, ``transactions`` → payment (``sources.md`` §5; seed 004). ``event_type``
is ``<resource>.<method lower>`` (``invoices.post``). Both routes add the tenant's default
currency (``options.currency``) through enrichment, for records that carry none.
"""

from __future__ import annotations

from ledgerflow.transformers.accessplanit.mapping import enrich, map_invoice, map_transaction
from ledgerflow.transformers.base import RawEvent, Route, SkipEvent

__all__ = ["ROUTES", "route"]

ROUTES: dict[str, Route] = {
    "invoices": Route("invoice", map_invoice, enrich),
    "transactions": Route("payment", map_transaction, enrich),
}
"""Resource → route."""

_METHODS = {"post", "put", "patch", "delete"}


def route(event: RawEvent) -> Route:
    """The route for an accessplanit event.

    Raises:
        SkipEvent: an unknown resource or HTTP method.

    """
    resource = (event.object_hint or event.event_type.split(".", 1)[0]).strip().lower()
    found = ROUTES.get(resource) or ROUTES.get(f"{resource}s")
    if found is None:
        raise SkipEvent(f"accessplanit resource {resource!r} is not mapped")
    if event.method.lower() not in _METHODS:
        raise SkipEvent(f"accessplanit method {event.method!r} is not mapped")
    return found
