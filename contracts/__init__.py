"""Canonical contracts of ledgerflow: the pydantic v2 models on the ``ledgerflow.<object>.v1`` topics.

Every service imports these and nothing from another service. ``OBJECT_MODELS`` maps each
canonical object type to its model; :func:`topic_for` gives its topic name.
"""

from __future__ import annotations

from ledgerflow.contracts.bill import Bill, VendorRef
from ledgerflow.contracts.budget import Budget, BudgetChange, BudgetLine
from ledgerflow.contracts.common import (
    Action,
    Address,
    CanonicalRecord,
    ContractError,
    CurrencyCode,
    Money,
    Reference,
    Source,
    canonical_id,
    currency_precision,
    erp_identifiers,
    is_legacy_key,
    quantize,
    tenant_scoped,
)
from ledgerflow.contracts.document import Document
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.invoice import Invoice
from ledgerflow.contracts.item import Item
from ledgerflow.contracts.lines import LineItem, check_minor_units, header_tax, line_tax, minor_unit, reconcile
from ledgerflow.contracts.party import BankAccount, Customer, Party, Vendor
from ledgerflow.contracts.payment import AppliedTo, Payment
from ledgerflow.contracts.purchase_order import PurchaseOrder, PurchaseOrderChange
from ledgerflow.contracts.sales_order import SalesOrder
from ledgerflow.contracts.sync_result import Difference, Direction, ErrorInfo, Operation, Outcome, SyncResult

__all__ = [
    "OBJECT_MODELS",
    "Action",
    "Address",
    "AppliedTo",
    "BankAccount",
    "Bill",
    "Budget",
    "BudgetChange",
    "BudgetLine",
    "CanonicalRecord",
    "ContractError",
    "CurrencyCode",
    "Customer",
    "Difference",
    "Direction",
    "Document",
    "ErrorCode",
    "ErrorInfo",
    "Invoice",
    "Item",
    "LineItem",
    "Money",
    "Operation",
    "Outcome",
    "Party",
    "Payment",
    "PurchaseOrder",
    "PurchaseOrderChange",
    "Reference",
    "SalesOrder",
    "Source",
    "SyncResult",
    "Vendor",
    "VendorRef",
    "canonical_id",
    "check_minor_units",
    "currency_precision",
    "erp_identifiers",
    "header_tax",
    "is_legacy_key",
    "line_tax",
    "minor_unit",
    "quantize",
    "reconcile",
    "tenant_scoped",
]

OBJECT_MODELS: dict[str, type[CanonicalRecord]] = {
    model.object_type: model
    for model in (
        Bill,
        Vendor,
        Customer,
        Invoice,
        Payment,
        PurchaseOrder,
        PurchaseOrderChange,
        Budget,
        BudgetChange,
        Item,
        SalesOrder,
    )
}
"""Canonical object type (``bill``, ``vendor``…) → its pydantic model."""
