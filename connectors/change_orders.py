"""How a vendor-contract change order marks the purchase-order lines it added, in every ERP.

QuickBooks, Xero and NetSuite keep no custom id on a purchase-order line, so the lines a change
order (INGENIOUS ``vendor_contract_change``) appends carry this prefix in their description (memo in
NetSuite). Re-applying a newer version of the change, or voiding it, replaces exactly the lines
that start with its tag.
"""

from __future__ import annotations

from ledgerflow.contracts import PurchaseOrderChange

__all__ = ["CHANGE_TAG", "change_order_tag"]

CHANGE_TAG = "Change order {number}: "
"""Prefix of the description (or memo) of every purchase-order line a change order added."""


def change_order_tag(change: PurchaseOrderChange) -> str:
    """The description prefix marking the lines of ``change`` on the purchase order it changes.

    ``change.number`` when the source sent one, else its source id (``"Change order CO-7: "``).
    """
    return CHANGE_TAG.format(number=change.number or change.source_id)
