"""Line items shared by bills, invoices, purchase orders and sales orders, and the reconciliation rule.

Reconciliation (checked on every document): the sum of line ``amount`` equals ``subtotal``, and
``subtotal + tax_total + shipping_total - discount_total`` equals ``total``, each compared after
rounding to the currency's minor unit. A line's ``amount`` equals ``quantity × unit_price``
(rounded the same way) whenever both are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from ledgerflow.contracts.common import ContractError, Money, Quantity, Rate, Reference, quantize

__all__ = ["LineItem", "reconcile"]


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


def reconcile(
    *,
    currency: str,
    line_items: Sequence[LineItem],
    subtotal: Decimal,
    tax_total: Decimal,
    total: Decimal,
    shipping_total: Decimal = Decimal(0),
    discount_total: Decimal = Decimal(0),
    what: str = "document",
) -> None:
    """Check that a document's lines and totals agree to the currency's precision.

    Raises:
        ContractError: naming the first figure that does not reconcile and both values.

    """
    for line in line_items:
        if line.quantity is not None and line.unit_price is not None:
            expected = quantize(line.quantity * line.unit_price, currency)
            if expected != quantize(line.amount, currency):
                raise ContractError(
                    f"{what} line {line.line_number}: quantity {line.quantity} × unit price "
                    f"{line.unit_price} = {expected} {currency}, but amount is {line.amount}"
                )
    lines_sum = quantize(sum((line.amount for line in line_items), Decimal(0)), currency)
    if line_items and lines_sum != quantize(subtotal, currency):
        raise ContractError(f"{what}: line amounts add up to {lines_sum} {currency}, but subtotal is {subtotal}")
    expected_total = quantize(subtotal + tax_total + shipping_total - discount_total, currency)
    if expected_total != quantize(total, currency):
        raise ContractError(
            f"{what}: subtotal {subtotal} + tax {tax_total} + shipping {shipping_total} - discount "
            f"{discount_total} = {expected_total} {currency}, but total is {total}"
        )
