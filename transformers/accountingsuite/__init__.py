"""AccountingSuite: ``event_type`` is ``<resource>.<action>`` (``SalesInvoice.create``, ``Companies.update``).

Resources (seed 002 "Response Payload"; ``sources.md`` §4.1): ``Companies`` → vendor and/or
customer, ``Item`` → item, ``SaleOrder``/``SalesOrder`` → sales_order, ``SalesInvoice`` →
invoice, ``CashSale`` → invoice + payment, ``CashReceipt`` → payment. New resources are added
by AccountingSuite over time (a "backward compatible" change, seed 002): unknown ones are skipped.
"""

from __future__ import annotations

from ledgerflow.transformers.accountingsuite.mapping import (
    map_cash_receipt,
    map_cash_sale,
    map_company,
    map_item,
    map_sales_invoice,
    map_sales_order,
)
from ledgerflow.transformers.base import RawEvent, Route, SkipEvent

__all__ = ["ROUTES", "route"]

ROUTES: dict[str, Route] = {
    "companies": Route("vendor", map_company),
    "company": Route("vendor", map_company),
    "item": Route("item", map_item),
    "saleorder": Route("sales_order", map_sales_order),
    "salesorder": Route("sales_order", map_sales_order),
    "salesinvoice": Route("invoice", map_sales_invoice),
    "cashsale": Route("invoice", map_cash_sale),
    "cashreceipt": Route("payment", map_cash_receipt),
}
"""Lower-cased ``resource`` → route."""

_ACTIONS = {"create", "update", "delete"}


def route(event: RawEvent) -> Route:
    """The route for an AccountingSuite event.

    Raises:
        SkipEvent: an unknown resource or action.

    """
    resource, _, action = event.event_type.partition(".")
    found = ROUTES.get(resource.strip().lower())
    if found is None:
        raise SkipEvent(f"AccountingSuite resource {resource!r} is not mapped")
    if action and action.strip().lower() not in _ACTIONS:
        raise SkipEvent(f"AccountingSuite action {action!r} is not mapped")
    return found
