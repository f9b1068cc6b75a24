"""Line items shared by bills, invoices, purchase orders and sales orders, and the money rules.

The source's line amounts and total are authoritative; ledgerflow checks them, never recomputes
them. The rules (:func:`reconcile`, checked on every document):

1. **Minor units.** Every line amount, tax, shipping, discount, subtotal and total is a whole
   number of the currency's minor unit (CLDR via Babel: USD 2 digits, JPY 0, KWD/BHD 3). An amount
   with more digits (``10.005 USD``, ``100.5 JPY``) is rejected: no ERP books it, and rounding it
   here would change the source's figure silently. Quantities and unit prices keep any precision.
2. **Lines.** When a line gives both ``quantity`` and ``unit_price``, ``quantity × unit_price −
   discount_amount`` must lie within one minor unit of ``amount`` (strictly less than ``0.01 USD``,
   ``1 JPY``, ``0.001 KWD``): every rounding a source may apply to the exact product — commercial
   half-up, banker's half-even, truncation — is accepted; anything further off is a wrong line.
3. **Subtotal.** The line amounts add up to ``subtotal`` exactly.
4. **Total.** ``subtotal + tax_total + shipping_total − discount_total = total`` exactly; for a
   document whose line amounts include tax (``tax_inclusive``) the tax is already in the
   subtotal: ``subtotal + shipping_total − discount_total = total``.

Negative line amounts are credit lines (a returned item, a credit applied on the document); they
follow the same rules. ``discount_total`` is the document-level discount taken off after the
subtotal; a line's own discount is ``LineItem.discount_amount`` and is already deducted from its
``amount``. Line ``tax_amount`` values are part of ``tax_total``; what ``tax_total`` holds beyond
them is header tax (:func:`header_tax`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from ledgerflow.contracts.common import (
    ContractError,
    Money,
    Quantity,
    Rate,
    Reference,
    currency_precision,
    quantize,
)

__all__ = ["LineItem", "check_minor_units", "header_tax", "line_tax", "minor_unit", "reconcile"]


class LineItem(BaseModel):
    """One line of a bill, invoice, purchase order or sales order.

    ``amount`` is the line's net amount in the document currency (major units); ``tax_amount``
    is the tax on it, also in the document currency.
    """

    model_config = ConfigDict(extra="forbid")

    line_number: int = Field(ge=1, description="1-based position of the line in the document.")
    source_id: str | None = Field(None, description="Id of the line in the source system.")
    description: str | None = Field(None, description="Free-text description of the line.")
    quantity: Quantity | None = Field(None, description="Number of units.")
    unit_price: Money | None = Field(None, description="Price per unit in the document currency.")
    amount: Money = Field(description="Net line amount in the document currency.")
    discount_amount: Money | None = Field(
        None,
        description="Discount on this line, already deducted: quantity × unit price − discount_amount = amount.",
    )
    tax_amount: Money | None = Field(None, description="Tax on this line in the document currency.")
    tax_rate: Reference | None = Field(None, description="Tax code or rate applied to the line.")
    tax_rate_percent: Rate | None = Field(None, description="Tax rate in percent, e.g. 20 for 20 %.")
    gl_account: Reference | None = Field(None, description="General-ledger (expense or revenue) account.")
    cost_code: Reference | None = Field(None, description="Construction/project cost code.")
    cost_type: Reference | None = Field(None, description="Cost type (labour, material, subcontract…).")
    project: Reference | None = Field(None, description="Project or job the line is charged to.")
    business_unit: Reference | None = Field(None, description="Business unit, department, location or class.")
    item: Reference | None = Field(None, description="Product or service item.")
    service_start: str | None = Field(None, description="Service period start (ISO date).")
    service_end: str | None = Field(None, description="Service period end (ISO date).")


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of ``currency``: ``0.01`` for USD, ``1`` for JPY, ``0.001`` for KWD (CLDR)."""
    return Decimal(1).scaleb(-currency_precision(currency))


def check_minor_units(amount: Decimal, currency: str, what: str) -> None:
    """Reject an amount that is not a whole number of ``currency``'s minor unit.

    Raises:
        ContractError: naming the figure, the amount and the currency's number of decimals.
    """
    if amount != quantize(amount, currency):
        digits = currency_precision(currency)
        raise ContractError(
            f"{what} {format(amount, 'f')} {currency} has more decimals than {currency}'s {digits}: "
            "the source must send the amount it books"
        )


def line_tax(line_items: Sequence[LineItem]) -> Decimal:
    """The tax carried by the lines (sum of ``tax_amount``; lines without one count zero)."""
    return sum((line.tax_amount or Decimal(0) for line in line_items), Decimal(0))


def header_tax(line_items: Sequence[LineItem], tax_total: Decimal) -> Decimal:
    """The part of ``tax_total`` no line carries (header-level tax, e.g. tax on shipping)."""
    return tax_total - line_tax(line_items)


def reconcile(
    *,
    currency: str,
    line_items: Sequence[LineItem],
    subtotal: Decimal,
    tax_total: Decimal,
    total: Decimal,
    shipping_total: Decimal = Decimal(0),
    discount_total: Decimal = Decimal(0),
    tax_inclusive: bool = False,
    what: str = "document",
) -> None:
    """Check a document's lines and totals against the money rules of this module's docstring.

    Args:
        currency: ISO 4217 code of every amount.
        line_items: the lines (amounts net of line discounts; gross of tax when ``tax_inclusive``).
        subtotal: the sum of the line amounts.
        tax_total: all tax on the document (lines' and header's).
        total: what the document totals.
        shipping_total: shipping or freight charged.
        discount_total: the document-level discount.
        tax_inclusive: whether line amounts include tax.
        what: how the document is named in errors.

    Raises:
        ContractError: naming the first figure that breaks a rule and the values involved.

    """
    unit = minor_unit(currency)
    for line in line_items:
        label = f"{what} line {line.line_number}"
        check_minor_units(line.amount, currency, f"{label} amount")
        for name in ("tax_amount", "discount_amount"):
            value = getattr(line, name)
            if value is not None:
                check_minor_units(value, currency, f"{label} {name.replace('_', ' ')}")
        if line.quantity is not None and line.unit_price is not None:
            exact = line.quantity * line.unit_price - (line.discount_amount or Decimal(0))
            if abs(exact - line.amount) >= unit:
                less = f" − discount {line.discount_amount}" if line.discount_amount else ""
                raise ContractError(
                    f"{label}: quantity {line.quantity} × unit price {line.unit_price}{less} = "
                    f"{format(exact, 'f')} {currency}, but amount is {line.amount} "
                    f"(more than one minor unit, {unit}, apart)"
                )
    for name, value in (
        ("subtotal", subtotal),
        ("tax total", tax_total),
        ("shipping total", shipping_total),
        ("discount total", discount_total),
        ("total", total),
    ):
        check_minor_units(value, currency, f"{what}: {name}")
    lines_sum = sum((line.amount for line in line_items), Decimal(0))
    if line_items and lines_sum != subtotal:
        raise ContractError(
            f"{what}: line amounts add up to {quantize(lines_sum, currency)} {currency}, but subtotal is {subtotal}"
        )
    if tax_inclusive:
        expected_total = subtotal + shipping_total - discount_total
        formula = f"subtotal {subtotal} (tax {tax_total} included)"
    else:
        expected_total = subtotal + tax_total + shipping_total - discount_total
        formula = f"subtotal {subtotal} + tax {tax_total}"
    if expected_total != total:
        raise ContractError(
            f"{what}: {formula} + shipping {shipping_total} - discount {discount_total} = "
            f"{quantize(expected_total, currency)} {currency}, but total is {total}"
        )
