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
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledgerflow.connectors.amounts import as_source_lines, document_amounts
from ledgerflow.connectors.base import UnresolvedReferenceError
from ledgerflow.connectors.tracking import check_tracking
from ledgerflow.connectors.verify import StoredDocument, StoredLine
from ledgerflow.contracts import Bill, LineItem, Reference, VendorRef
from ledgerflow.contracts.common import erp_identifiers, quantize

__all__ = [
    "DEFAULT_LINE_ASSIGNMENTS",
    "edm_datetime",
    "invoice_reference",
    "invoicing_party",
    "lookup_filter",
    "odata_string",
    "parse_edm_datetime",
    "stored_document",
    "supplier_invoice_body",
    "supplier_name_filter",
    "supplier_number",
    "tax_code",
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


PAYMENT_REFERENCE_LENGTH = 30
"""``PaymentReference`` length in ``A_SupplierInvoiceType``."""

MAX_NET_PAYMENT_DAYS = 999
"""``NetPaymentDays`` is ``Edm.Decimal`` precision 3, scale 0."""

SAP_TAX_CODE_LENGTH = 2
"""``TaxCode`` length in ``A_SupplierInvoiceItemGLAcctType`` / ``A_SupplierInvoiceTaxType``."""

GL_ACCOUNT_LENGTH = 10
"""``GLAccount`` length in ``A_SupplierInvoiceItemGLAcctType``."""

ASSIGNMENT_LENGTHS: dict[str, int] = {
    "CostCenter": 10,
    "ProfitCenter": 10,
    "WBSElement": 24,
    "InternalOrder": 12,
    "CostObject": 12,
    "FunctionalArea": 16,
    "Fund": 10,
    "FundsCenter": 16,
    "CommitmentItem": 24,
    "BusinessArea": 4,
    "ProjectNetwork": 12,
    "GrantID": 20,
    "BudgetPeriod": 10,
}
"""Max length of the G/L line's account-assignment properties (``specs/sap_si.edmx``)."""


def _gl_account(code: str, options: Mapping[str, Any], what: str) -> str:
    mapped = str((options.get("gl_accounts") or {}).get(code, code))
    if len(mapped) > GL_ACCOUNT_LENGTH:
        raise UnresolvedReferenceError(
            f"{what}: G/L account {code!r} does not fit SAP's {GL_ACCOUNT_LENGTH}-character GLAccount; map it to an "
            f"SAP G/L account in the connection's options.gl_accounts"
        )
    return mapped


def _percent_key(line: LineItem) -> str | None:
    if line.tax_rate_percent is None:
        return None
    return f"{line.tax_rate_percent.normalize():f}%"


def tax_code(line: LineItem, options: Mapping[str, Any], what: str) -> str | None:
    """The SAP ``TaxCode`` of a line, never shortened.

    Order: ``options["tax_codes"]`` (source tax code, tax name or rate such as ``"19%"`` → SAP
    code) for the line's tax rate reference, then its rate in percent; then the source's own
    code when it fits SAP's two characters; then ``options["default_tax_code"]``.

    Raises:
        UnresolvedReferenceError: the source's code is longer than two characters and the
            connection does not map it (19 % and 7 % VAT must not both become ``DE``).
    """
    table: Mapping[str, Any] = options.get("tax_codes") or {}
    internal, custom, name = erp_identifiers(line.tax_rate)
    for key in (custom, internal, name, _percent_key(line)):
        if key is not None and key in table:
            return str(table[key])
    own = custom or internal
    if own is not None:
        if len(own) > SAP_TAX_CODE_LENGTH:
            raise UnresolvedReferenceError(
                f"{what}: tax code {own!r} does not fit SAP's {SAP_TAX_CODE_LENGTH}-character TaxCode; map it to "
                f"an SAP tax code in the connection's options.tax_codes"
            )
        return own
    default = options.get("default_tax_code")
    return str(default) if default else None


def _amount(value: Decimal) -> str:
    return format(abs(value), "f")


def _tax_entries(
    currency: str, taxed_lines: list[tuple[str | None, Decimal, Decimal]], tax: Decimal, sign: int, what: str
) -> list[dict[str, Any]]:
    """``to_SupplierInvoiceTax`` entries: the source's tax per SAP tax code, adding up to ``tax``.

    ``taxed_lines`` are ``(tax code, net amount, the line's own tax)`` per G/L line.
    """
    distinct = list(dict.fromkeys(code for code, _, _ in taxed_lines if code))
    if not distinct:
        raise UnresolvedReferenceError(
            f"{what} has tax of {tax} {currency} but no line has a tax code and the connection has no "
            "options.default_tax_code"
        )
    by_code = dict.fromkeys(distinct, Decimal(0))
    base = dict.fromkeys(distinct, Decimal(0))
    for code, net, line_tax in taxed_lines:
        if code:
            base[code] += net
            by_code[code] += line_tax
    if sum(by_code.values(), Decimal(0)) != tax:
        if len(distinct) != 1:
            raise UnresolvedReferenceError(
                f"{what}: tax of {tax} {currency} cannot be split over tax codes {', '.join(distinct)} "
                "(the lines' tax amounts do not add up to it)"
            )
        by_code = {distinct[0]: tax}
    for code in distinct:
        if by_code[code] * sign < 0:
            raise UnresolvedReferenceError(
                f"{what}: the tax on code {code} ({by_code[code]} {currency}) runs against the invoice's direction; "
                "SAP tax lines cannot carry it"
            )
    return [
        {
            "SupplierInvoiceTaxCounter": str(index),
            "TaxCode": code,
            "DocumentCurrency": currency,
            "TaxAmount": _amount(by_code[code] * sign),
            "TaxBaseAmountInTransCrcy": _amount(base[code] * sign),
        }
        for index, code in enumerate(distinct, start=1)
    ]


def supplier_invoice_body(bill: Bill, options: Mapping[str, Any], party: str | None = None) -> dict[str, Any]:
    """Map a canonical :class:`~contracts.Bill` to an ``A_SupplierInvoice`` deep insert with G/L lines.

    ``party`` is the resolved SAP supplier number (the connector resolves it from the accounting
    ids, the binder, or the Business Partner API by name); None → :func:`invoicing_party`.

    Header: ``CompanyCode`` (``options["company_code"]``, required), ``DocumentDate`` (bill date),
    ``PostingDate`` (posting date or bill date), ``SupplierInvoiceIDByInvcgParty``,
    ``InvoicingParty``, ``DocumentCurrency``, ``InvoiceGrossAmount`` (= bill total),
    ``UnplannedDeliveryCost`` (shipping), ``DocumentHeaderText`` (memo, 25 chars; free text is
    shortened), ``DueCalculationBaseDate`` (the bill date, SAP's baseline date) and
    ``NetPaymentDays`` (days from it to the due date, so SAP's due date is the source's),
    ``PaymentReference`` (the vendor's invoice number when longer than the 16 characters of
    ``SupplierInvoiceIDByInvcgParty``, which then holds a stable hash). A bill
    with a negative total is a credit memo
    (``SupplierInvoiceIsCreditMemo`` ``X``, amounts positive, debit/credit swapped).
    Lines: ``to_SupplierInvoiceItemGLAcct`` with ``SupplierInvoiceItem`` (1-based), ``GLAccount``
    (``options["gl_accounts"]`` maps source codes), ``SupplierInvoiceItemAmount`` (net, at the
    currency's minor unit, adding up to the subtotal), ``DebitCreditCode`` ``S`` (debit; ``H``
    for a credit line), ``TaxCode`` (:func:`tax_code`), account assignments. A discount is a
    credit line on ``options["discount_gl_account"]``.

    Tax (``options["tax_calculation"]``): ``"source"`` (default) posts the source's tax amounts
    per tax code in ``to_SupplierInvoiceTax`` with ``TaxIsCalculatedAutomatically`` false, so SAP
    books exactly the source's tax; ``"sap"`` lets SAP calculate tax from the tax codes
    (``TaxIsCalculatedAutomatically`` true), and SAP refuses the invoice when its tax does not
    balance the gross amount.

    Raises:
        UnresolvedReferenceError: no company code, supplier number, G/L account, tax code for a
            taxed bill, discount account; a G/L account, tax code or assignment that does not fit
            its SAP field (naming the option that maps it).

    """
    company = options.get("company_code")
    if not company:
        raise UnresolvedReferenceError("the SAP connection needs options.company_code")
    what = f"bill {bill.canonical_id}"
    currency = bill.currency
    amounts = document_amounts(bill)
    sign = -1 if amounts.total < 0 else 1
    taxed = amounts.tax != 0
    calculate = options.get("tax_calculation", "source") == "sap"
    assignments: Mapping[str, str] = options.get("line_assignments", DEFAULT_LINE_ASSIGNMENTS)
    lines: list[dict[str, Any]] = []
    taxed_lines: list[tuple[str | None, Decimal, Decimal]] = []
    for index, (line, amount) in enumerate(zip(bill.line_items, amounts.lines, strict=True), start=1):
        line_what = f"{what} line {line.line_number}"
        account = _code(line.gl_account) or options.get("default_expense_account")
        if not account:
            raise UnresolvedReferenceError(
                f"{line_what} has no G/L account and the connection has no options.default_expense_account"
            )
        directed = amount * sign
        item: dict[str, Any] = {
            "SupplierInvoiceItem": str(index),
            "CompanyCode": str(company),
            "GLAccount": _gl_account(str(account), options, line_what),
            "DocumentCurrency": currency,
            "SupplierInvoiceItemAmount": _amount(directed),
            "DebitCreditCode": "S" if directed >= 0 else "H",
        }
        code = tax_code(line, options, line_what)
        if taxed and not code and calculate:
            raise UnresolvedReferenceError(f"{line_what} has no tax code and the bill has tax")
        line_tax = quantize(line.tax_amount, currency) if line.tax_amount else Decimal(0)
        taxed_lines.append((code, amount, line_tax))
        if code:
            item["TaxCode"] = code
        if line.description:
            item["SupplierInvoiceItemText"] = line.description[:50]
        for field, sap_property in assignments.items():
            ref = getattr(line, field, None)
            if ref is None and field == "project":
                ref = bill.project
            if not isinstance(ref, Reference):
                continue
            value = _code(ref)
            if not value:
                check_tracking(ref, field, line_what, "SAP", options)
                continue
            if value:
                limit = ASSIGNMENT_LENGTHS.get(sap_property)
                if limit is not None and len(value) > limit:
                    raise UnresolvedReferenceError(
                        f"{line_what}: {field} {value!r} does not fit SAP's {limit}-character {sap_property}; "
                        "map the source's codes to SAP's in the source or change options.line_assignments"
                    )
                item[sap_property] = value
        lines.append(item)
    if amounts.discount:
        discount_account = options.get("discount_gl_account")
        if not discount_account:
            raise UnresolvedReferenceError(
                f"{what} has a discount of {amounts.discount} {currency} but the connection has no "
                "options.discount_gl_account (the SAP G/L account that books discounts received)"
            )
        directed = -amounts.discount * sign
        item = {
            "SupplierInvoiceItem": str(len(lines) + 1),
            "CompanyCode": str(company),
            "GLAccount": _gl_account(str(discount_account), options, f"{what} discount"),
            "DocumentCurrency": currency,
            "SupplierInvoiceItemAmount": _amount(directed),
            "DebitCreditCode": "S" if directed >= 0 else "H",
            "SupplierInvoiceItemText": "Discount",
        }
        used = next((code for code, _, _ in taxed_lines if code), None)
        if used:
            item["TaxCode"] = used
        taxed_lines.append((used, -amounts.discount, Decimal(0)))
        lines.append(item)
    body: dict[str, Any] = {
        "CompanyCode": str(company),
        "DocumentDate": edm_datetime(bill.bill_date),
        "PostingDate": edm_datetime(bill.posting_date or bill.bill_date),
        "SupplierInvoiceIDByInvcgParty": invoice_reference(bill),
        "InvoicingParty": party or invoicing_party(bill),
        "DocumentCurrency": currency,
        "InvoiceGrossAmount": _amount(amounts.total),
        "TaxIsCalculatedAutomatically": taxed and calculate,
        "DueCalculationBaseDate": edm_datetime(bill.bill_date),
        "to_SupplierInvoiceItemGLAcct": {"results": lines},
    }
    if bill.due_date is not None:
        days = (bill.due_date - bill.bill_date).days
        if days > MAX_NET_PAYMENT_DAYS:
            raise UnresolvedReferenceError(
                f"{what}: due date {bill.due_date} is {days} days after the invoice date; SAP's NetPaymentDays "
                f"holds at most {MAX_NET_PAYMENT_DAYS}"
            )
        body["NetPaymentDays"] = str(days)
    if sign < 0:
        body["SupplierInvoiceIsCreditMemo"] = "X"
    if taxed and not calculate:
        body["to_SupplierInvoiceTax"] = {"results": _tax_entries(currency, taxed_lines, amounts.tax, sign, what)}
    if amounts.shipping:
        if amounts.shipping * sign < 0:
            raise UnresolvedReferenceError(
                f"{what}: a negative shipping charge cannot be an SAP unplanned delivery cost"
            )
        body["UnplannedDeliveryCost"] = _amount(amounts.shipping)
    if bill.memo:
        body["DocumentHeaderText"] = bill.memo[:25]
    if bill.bill_number and body["SupplierInvoiceIDByInvcgParty"] != bill.bill_number:
        # SAP's reference holds 16 characters: the vendor's longer invoice number goes where SAP
        # keeps the reference the payment quotes, so it is not lost.
        if len(bill.bill_number) > PAYMENT_REFERENCE_LENGTH:
            raise UnresolvedReferenceError(
                f"{what}: invoice number {bill.bill_number!r} is longer than SAP holds (16 characters as the "
                f"reference, {PAYMENT_REFERENCE_LENGTH} as the payment reference)"
            )
        body["PaymentReference"] = bill.bill_number
    return body


def parse_edm_datetime(value: Any) -> date | None:
    """The date of an OData V2 ``Edm.DateTime`` (``"/Date(ms)/"`` or ``"YYYY-MM-DDThh:mm:ss"``), else None."""
    if not isinstance(value, str):
        return None
    if value.startswith("/Date("):
        digits = value[6:].split(")", 1)[0].split("+", 1)[0]
        try:
            return datetime.fromtimestamp(int(digits) / 1000, tz=UTC).date()
        except ValueError:
            return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def stored_document(bill: Bill, invoice: Mapping[str, Any]) -> StoredDocument:
    """What SAP holds for ``bill``, read back as ``invoice`` (``A_SupplierInvoice`` with its G/L and tax items).

    Total ``InvoiceGrossAmount`` (negative for a credit memo), currency ``DocumentCurrency``,
    dates ``PostingDate`` / ``DocumentDate``, due date ``DueCalculationBaseDate`` +
    ``NetPaymentDays``, counterparty ``InvoicingParty``, tax the ``to_SupplierInvoiceTax``
    amounts, shipping ``UnplannedDeliveryCost``; the first ``len(line_items)`` G/L items are the
    source's lines (debit positive, credit negative), the items after them the discount line.
    """
    sign = Decimal(-1) if invoice.get("SupplierInvoiceIsCreditMemo") == "X" else Decimal(1)

    def results(nav: str) -> list[Mapping[str, Any]]:
        container = invoice.get(nav)
        found = container.get("results") if isinstance(container, Mapping) else None
        return [entry for entry in found or [] if isinstance(entry, Mapping)]

    items = [
        _dec(i.get("SupplierInvoiceItemAmount")) * (-1 if i.get("DebitCreditCode") == "H" else 1) * sign
        for i in results("to_SupplierInvoiceItemGLAcct")
    ]
    count = len(bill.line_items)
    base = parse_edm_datetime(invoice.get("DueCalculationBaseDate"))
    days = invoice.get("NetPaymentDays")
    due = base + timedelta(days=int(_dec(days))) if base is not None and days not in (None, "") else None
    party = invoice.get("InvoicingParty")
    return StoredDocument(
        total=_dec(invoice.get("InvoiceGrossAmount")) * sign,
        currency=str(invoice.get("DocumentCurrency")) if invoice.get("DocumentCurrency") else None,
        tax_total=sum((_dec(t.get("TaxAmount")) for t in results("to_SupplierInvoiceTax")), Decimal(0)) * sign,
        shipping_total=_dec(invoice.get("UnplannedDeliveryCost")) * sign,
        discount_total=-sum(items[count:], Decimal(0)),
        txn_date=parse_edm_datetime(invoice.get("PostingDate")),
        document_date=parse_edm_datetime(invoice.get("DocumentDate")),
        due_date=due,
        counterparty_id=str(party) if party else None,
        lines=tuple(StoredLine(amount) for amount in as_source_lines(bill, items[:count])),
    )
