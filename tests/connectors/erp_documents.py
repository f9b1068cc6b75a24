"""Canonical documents with the money features ERPs get wrong: tax, shipping, discounts, credits, rounding, currencies.

Shared by the golden request-body tests and the read-back/property tests of the QuickBooks and
Xero connectors. Every document reconciles under the contract's money rules.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledgerflow.contracts import Bill, Document, Invoice, PurchaseOrder

QBO_OPTIONS: dict[str, Any] = {
    "tax_account": "7",
    "shipping_account": "7",
    "discount_account": "7",
    "tax_item": "2",
    "shipping_item": "1",
}
"""QuickBooks sandbox ids: account 7 (Advertising) for adjustments, item 2 tax, item 1 shipping."""

QBO_TAX_CODE_OPTIONS: dict[str, Any] = {**QBO_OPTIONS, "tax_code": "TAX"}

XERO_OPTIONS: dict[str, Any] = {
    "tax_account": "429",
    "shipping_account": "429",
    "discount_account": "400",
    "default_expense_account": "429",
    "default_revenue_account": "200",
}
"""Xero sandbox account codes for adjustments and defaults."""


def _money(value: Any) -> Decimal:
    return Decimal(str(value))


def document(kind: str, number: str, lines: list[dict[str, Any]], *, currency: str = "USD", **header: Any) -> Document:
    """A canonical ``bill``/``invoice``/``purchase_order`` whose subtotal and total are computed from its figures."""
    subtotal = sum((_money(line["amount"]) for line in lines), Decimal(0))
    tax = _money(header.pop("tax_total", "0"))
    shipping = _money(header.pop("shipping_total", "0"))
    discount = _money(header.pop("discount_total", "0"))
    inclusive = bool(header.pop("tax_inclusive", False))
    total = subtotal + shipping - discount + (Decimal(0) if inclusive else tax)
    source = {"bill": "mercoa", "invoice": "monite", "purchase_order": "ingenious"}[kind]
    base: dict[str, Any] = {
        "canonical_id": f"{source}:{kind}:{number}",
        "tenant": "t",
        "source": source,
        "source_id": number,
        "source_event": "created",
        "currency": currency,
        "line_items": [{"line_number": i + 1, **line} for i, line in enumerate(lines)],
        "subtotal": str(subtotal),
        "tax_total": str(tax),
        "shipping_total": str(shipping),
        "discount_total": str(discount),
        "tax_inclusive": inclusive,
        "total": str(total),
    }
    if kind == "bill":
        base |= {"vendor": {"name": "Acme Supply", "source_id": "v1"}, "bill_date": "2024-03-01"}
        base |= {"due_date": "2024-03-31", "bill_number": f"B-{number}"}
        return Bill.model_validate(base | header)
    if kind == "invoice":
        base |= {"customer": {"name": "Bright Homes", "source_id": "c1"}, "invoice_date": "2024-03-05"}
        base |= {"due_date": "2024-04-04", "invoice_number": f"I-{number}"}
        return Invoice.model_validate(base | header)
    base |= {"vendor": {"name": "Acme Supply", "source_id": "v1"}, "order_date": "2024-02-20", "number": f"PO-{number}"}
    return PurchaseOrder.model_validate(base | header)


def _gl(code: str) -> dict[str, str]:
    return {"accounting_custom_id": code}


def golden_cases(erp: str) -> dict[str, Document]:
    """Documents every connector must book exactly, named for their golden files.

    ``erp`` picks the GL account / item identifiers that exist in that ERP's sandbox.
    """
    expense = {"accounting_id": "600394"} if erp == "quickbooks" else _gl("600394")
    revenue = {"accounting_id": "79"} if erp == "quickbooks" else _gl("200")
    item = {"accounting_id": "1", "accounting_custom_id": "SVC"}
    vat20 = {"accounting_custom_id": "OUTPUT2", "name": "20% VAT on income"}
    input_vat = {"accounting_custom_id": "INPUT2", "name": "20% VAT on expenses"}
    return {
        # Commercial (half-up) rounding: 3 × 0.335 = 1.005 → 1.01; a four-decimal unit price.
        "bill_rounding": document(
            "bill",
            "r1",
            [
                {
                    "description": "Washers",
                    "quantity": "3",
                    "unit_price": "0.335",
                    "amount": "1.01",
                    "gl_account": expense,
                },
                {
                    "description": "Cable",
                    "quantity": "7",
                    "unit_price": "1.4286",
                    "amount": "10.00",
                    "gl_account": expense,
                },
            ],
        ),
        # Line tax, header tax (on freight), shipping, a header discount and a credit line.
        "bill_tax_shipping_discount_credit": document(
            "bill",
            "t1",
            [
                {
                    "description": "Timber",
                    "quantity": "10",
                    "unit_price": "12.50",
                    "amount": "125.00",
                    "tax_amount": "25.00",
                    "tax_rate": input_vat,
                    "gl_account": expense,
                },
                {
                    "description": "Returned pallet",
                    "amount": "-15.00",
                    "tax_amount": "-3.00",
                    "tax_rate": input_vat,
                    "gl_account": expense,
                },
            ],
            currency="GBP",
            tax_total="24.00",
            shipping_total="10.00",
            discount_total="5.50",
        ),
        # Zero-decimal currency.
        "bill_jpy": document(
            "bill",
            "j1",
            [
                {
                    "description": "Consulting",
                    "quantity": "3",
                    "unit_price": "33333.3333",
                    "amount": "100000",
                    "gl_account": expense,
                }
            ],
            currency="JPY",
            tax_total="10000",
        ),
        # AR invoice: line tax with tax rates, a line discount, shipping, a header discount.
        "invoice_tax_shipping_discount": document(
            "invoice",
            "i1",
            [
                {
                    "description": "Design work",
                    "quantity": "4",
                    "unit_price": "25",
                    "discount_amount": "10.00",
                    "amount": "90.00",
                    "tax_amount": "18.00",
                    "tax_rate": vat20,
                    "gl_account": revenue,
                    "item": item,
                },
                {
                    "description": "Site visit",
                    "quantity": "1",
                    "unit_price": "60",
                    "amount": "60.00",
                    "tax_amount": "12.00",
                    "tax_rate": vat20,
                    "gl_account": revenue,
                    "item": item,
                },
            ],
            currency="GBP",
            tax_total="30.00",
            shipping_total="8.00",
            discount_total="6.00",
        ),
        # Tax-inclusive amounts (UK retail style).
        "invoice_tax_inclusive": document(
            "invoice",
            "i2",
            [
                {
                    "description": "Course seat",
                    "quantity": "2",
                    "unit_price": "60",
                    "amount": "120.00",
                    "tax_amount": "20.00",
                    "tax_rate": vat20,
                    "gl_account": revenue,
                    "item": item,
                },
            ],
            currency="GBP",
            tax_total="20.00",
            tax_inclusive=True,
        ),
        "purchase_order_tax": document(
            "purchase_order",
            "p1",
            [
                {
                    "description": "Rebar",
                    "quantity": "40",
                    "unit_price": "7.125",
                    "amount": "285.00",
                    "gl_account": expense,
                }
            ],
            tax_total="22.80",
        ),
    }


def unbookable_cases() -> dict[str, tuple[Document, str]]:
    """Documents QuickBooks and Xero cannot hold exactly, with the words the failure must contain."""
    return {
        "bill_kwd_mils": (
            document("bill", "k1", [{"description": "Fuel", "amount": "10.125"}], currency="KWD"),
            "line 1 amount 10.125 KWD is not a whole cent",
        ),
        "bill_negative_total": (
            document("bill", "n1", [{"description": "Credit", "amount": "-20.00"}]),
            "is negative",
        ),
    }
