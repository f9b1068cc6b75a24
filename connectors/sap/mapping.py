"""Canonical bills → SAP S/4HANA ``A_SupplierInvoice`` deep-insert bodies (pure functions).

Property names follow the EDMX of ``API_SUPPLIERINVOICE_PROCESS_SRV`` (entity types
``A_SupplierInvoiceType`` and ``A_SupplierInvoiceItemGLAcctType``; ``specs/sap_si.edmx``) and the
assembled example in reference ``erp_apis.md`` §4.2. OData V2 JSON conventions: ``Edm.Decimal`` as
decimal *strings* (``"119.00"``), ``Edm.DateTime`` as ``"/Date(<ms since epoch>)/"``, deep-insert
navigation properties as ``{"results": [...]}``.

References: the supplier (``InvoicingParty``, max 10) and G/L accounts use the SAP codes —
``accounting_custom_id`` first (SAP supplier/account numbers are the human codes), then
``accounting_id``; a supplier without one is resolved by the connector (binder, then by name).
Line account assignment defaults: business unit → ``CostCenter``, project →
``WBSElement``, cost code → ``InternalOrder`` (``options["line_assignments"]`` overrides).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from ledgerflow.contracts import Bill, Reference, VendorRef
from ledgerflow.contracts.common import quantize

__all__ = [
    "DEFAULT_LINE_ASSIGNMENTS",
    "UnresolvedReferenceError",
    "edm_datetime",
    "invoice_reference",
    "invoicing_party",
    "lookup_filter",
    "odata_string",
    "supplier_invoice_body",
    "supplier_name_filter",
    "supplier_number",
]

SUPPLIER_NAME_LENGTH = 35
"""``SupplierName`` max length in ``A_SupplierType`` (``API_BUSINESS_PARTNER``).

Longer names are matched against ``SupplierFullName`` (max 220).
"""

DEFAULT_LINE_ASSIGNMENTS: dict[str, str] = {
    "business_unit": "CostCenter",
    "project": "WBSElement",
    "cost_code": "InternalOrder",
}
"""Canonical line reference → ``A_SupplierInvoiceItemGLAcct`` account-assignment property."""


class UnresolvedReferenceError(ValueError):
    """The supplier, a G/L account, a tax code or the company code is missing."""


def edm_datetime(value: date) -> str:
    """OData V2 JSON ``Edm.DateTime`` of a date: ``"/Date(1705276800000)/"`` (UTC midnight, ms)."""
    midnight = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return f"/Date({int(midnight.timestamp() * 1000)})/"


def odata_string(value: str) -> str:
    """An OData V2 string literal: ``'it''s'`` (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _code(ref: Reference | None) -> str | None:
    if ref is None:
        return None
    return ref.accounting_custom_id or ref.accounting_id or None


def invoice_reference(bill: Bill) -> str:
    """``SupplierInvoiceIDByInvcgParty`` (max 16): the vendor's invoice number, else a stable hash.

    A bill without a number gets ``LF`` + 14 hex digits of SHA-256 of its canonical id, so the
    look-up-before-create key stays the same for every redelivery.
    """
    if bill.bill_number and len(bill.bill_number) <= 16:
        return bill.bill_number
    return "LF" + hashlib.sha256(bill.canonical_id.encode()).hexdigest()[:14].upper()


def supplier_number(vendor: VendorRef) -> str | None:
    """The SAP supplier number the source sent for ``vendor``, else None.

    The custom id comes first (SAP supplier numbers are the human codes); an id longer than
    ``InvoicingParty``'s 10 characters cannot be an SAP supplier number and is never truncated.
    """
    for party in (vendor.accounting_custom_id, vendor.accounting_id):
        if party and len(party) <= 10:
            return party
    return None


def invoicing_party(bill: Bill) -> str:
    """The SAP supplier number (``InvoicingParty``) from the vendor's accounting ids (see :func:`supplier_number`).

    Raises:
        UnresolvedReferenceError: the vendor carries no usable SAP code.

    """
    party = supplier_number(bill.vendor)
    if party is None:
        raise UnresolvedReferenceError(
            f"vendor {bill.vendor.name or '?'} has no SAP supplier number (an accounting id of at most 10 characters)"
        )
    return party


def supplier_name_filter(name: str) -> str:
    """``$filter`` of an ``A_Supplier`` query by name (``API_BUSINESS_PARTNER``, OData V2).

    ``SupplierName eq '<name>'`` (quotes doubled); a name longer than ``SupplierName``'s 35
    characters cannot equal it, so it is compared with ``SupplierFullName`` (220) instead.
    """
    field = "SupplierName" if len(name) <= SUPPLIER_NAME_LENGTH else "SupplierFullName"
    return f"{field} eq {odata_string(name)}"


def lookup_filter(bill: Bill, party: str | None = None) -> str:
    """``$filter`` of the look-up before create: ``SupplierInvoiceIDByInvcgParty`` and ``InvoicingParty``.

    ``party`` is the resolved SAP supplier number; None → :func:`invoicing_party`.

    Raises:
        UnresolvedReferenceError: no ``party`` and the vendor carries no SAP code.

    """
    return (
        f"SupplierInvoiceIDByInvcgParty eq {odata_string(invoice_reference(bill))}"
        f" and InvoicingParty eq {odata_string(party or invoicing_party(bill))}"
    )


def supplier_invoice_body(bill: Bill, options: Mapping[str, Any], party: str | None = None) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Bill` to an ``A_SupplierInvoice`` deep insert with G/L lines.

    ``party`` is the resolved SAP supplier number (the connector resolves it from the accounting
    ids, the binder, or the Business Partner API by name); None → :func:`invoicing_party`.

    Header: ``CompanyCode`` (``options["company_code"]``, required), ``DocumentDate`` (bill date),
    ``PostingDate`` (posting date or bill date), ``SupplierInvoiceIDByInvcgParty``,
    ``InvoicingParty``, ``DocumentCurrency``, ``InvoiceGrossAmount`` (= bill total),
    ``TaxIsCalculatedAutomatically`` (true when the bill has tax: SAP computes it from each line's
    ``TaxCode``), ``UnplannedDeliveryCost`` (shipping), ``ManualCashDiscount`` (discount),
    ``DocumentHeaderText`` (memo, 25 chars), ``DueCalculationBaseDate``.
    Lines: ``to_SupplierInvoiceItemGLAcct`` with ``SupplierInvoiceItem`` (1-based), ``GLAccount``,
    ``SupplierInvoiceItemAmount`` (net), ``DebitCreditCode`` ``S`` (debit; ``H`` for a negative
    line), ``TaxCode`` (line tax rate, else ``options["default_tax_code"]``), account assignments.

    Raises:
        UnresolvedReferenceError: no company code, supplier number, G/L account, or tax code for
            a taxed bill.

    """
    company = options.get("company_code")
    if not company:
        raise UnresolvedReferenceError("the SAP connection needs options.company_code")
    currency = bill.currency
    taxed = bill.tax_total != 0
    assignments: Mapping[str, str] = options.get("line_assignments", DEFAULT_LINE_ASSIGNMENTS)
    lines: list[dict[str, Any]] = []
    for index, line in enumerate(bill.line_items, start=1):
        account = _code(line.gl_account) or options.get("default_gl_account")
        if not account:
            raise UnresolvedReferenceError(f"line {line.line_number} has no G/L account")
        amount = quantize(line.amount, currency)
        item: dict[str, Any] = {
            "SupplierInvoiceItem": str(index),
            "CompanyCode": str(company),
            "GLAccount": str(account)[:10],
            "DocumentCurrency": currency,
            "SupplierInvoiceItemAmount": format(abs(amount), "f"),
            "DebitCreditCode": "S" if amount >= 0 else "H",
        }
        tax_code = _code(line.tax_rate) or options.get("default_tax_code")
        if taxed and not tax_code:
            raise UnresolvedReferenceError(f"line {line.line_number} has no tax code and the bill has tax")
        if tax_code:
            item["TaxCode"] = str(tax_code)[:2]
        if line.description:
            item["SupplierInvoiceItemText"] = line.description[:50]
        for field, sap_property in assignments.items():
            ref = getattr(line, field, None)
            if ref is None and field == "project":
                ref = bill.project
            value = _code(ref) if isinstance(ref, Reference) else None
            if value:
                item[sap_property] = value
        lines.append(item)
    body: dict[str, Any] = {
        "CompanyCode": str(company),
        "DocumentDate": edm_datetime(bill.bill_date),
        "PostingDate": edm_datetime(bill.posting_date or bill.bill_date),
        "SupplierInvoiceIDByInvcgParty": invoice_reference(bill),
        "InvoicingParty": party or invoicing_party(bill),
        "DocumentCurrency": currency,
        "InvoiceGrossAmount": format(quantize(bill.total, currency), "f"),
        "TaxIsCalculatedAutomatically": taxed,
        "DueCalculationBaseDate": edm_datetime(bill.bill_date),
        "to_SupplierInvoiceItemGLAcct": {"results": lines},
    }
    if bill.shipping_total:
        body["UnplannedDeliveryCost"] = format(quantize(bill.shipping_total, currency), "f")
    if bill.discount_total:
        body["ManualCashDiscount"] = format(quantize(bill.discount_total, currency), "f")
    if bill.memo:
        body["DocumentHeaderText"] = bill.memo[:25]
    return body
