"""A document's amounts at the currency's minor unit, adding up to the source's total exactly.

ERPs store money at the currency's minor unit (cents; none for JPY; mils for KWD). A source may
send line amounts with more digits (an unrounded INGENIOUS quantity × unit value) or figures
whose rounded parts do not add up (three lines of 33.333 for a 100.00 subtotal). Rounding each
figure on its own then makes the ERP's total differ from the source's by a minor unit or more.
The source's subtotal and total are authoritative, so :func:`document_amounts` rounds every
figure and hands the rounding difference, one minor unit at a time, to the figures with the
largest rounding remainders (the largest-remainder method): the lines add up to the rounded
subtotal, and lines + tax + shipping - discount to the rounded total, to the minor unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from ledgerflow.contracts import Document
from ledgerflow.contracts.common import currency_precision, quantize

__all__ = ["DocumentAmounts", "UnbookableAmountsError", "allocate", "document_amounts"]


class UnbookableAmountsError(ValueError):
    """The document's figures cannot be expressed as the net lines and charges an ERP books."""


def allocate(amounts: Sequence[Decimal], target: Decimal, currency: str) -> list[Decimal]:
    """Round ``amounts`` to ``currency``'s minor unit so that they add up to ``target`` exactly.

    Each amount is rounded half-even; the difference between ``target`` (already at the minor
    unit) and the rounded sum is spread one minor unit at a time over the amounts whose rounding
    moved them furthest the other way (ties: the earlier amount). An empty list stays empty.

    Raises:
        ValueError: ``target`` has more digits than the currency's minor unit, or the amounts are
            empty while ``target`` is not zero.
    """
    unit = Decimal(1).scaleb(-currency_precision(currency))
    if target != target.quantize(unit, rounding=ROUND_HALF_EVEN):
        raise ValueError(f"target {target} is not at the minor unit of {currency}")
    if not amounts:
        if target:
            raise ValueError(f"cannot spread {target} {currency} over no amounts")
        return []
    rounded = [quantize(amount, currency) for amount in amounts]
    steps = int((target - sum(rounded, Decimal(0))) / unit)
    if steps:
        direction = 1 if steps > 0 else -1
        # Remainders in the direction of the correction: the amounts rounded down the most get the
        # first extra unit when the sum is short (and the reverse when it is over).
        order = sorted(
            range(len(amounts)),
            key=lambda i: (-(amounts[i] - rounded[i]) * direction, i),
        )
        for n in range(abs(steps)):
            index = order[n % len(order)]
            rounded[index] += unit * direction
    return rounded


@dataclass(frozen=True, slots=True)
class DocumentAmounts:
    """A document's figures at the currency's minor unit.

    ``sum(lines) == subtotal`` and ``subtotal + tax + shipping - discount == total`` hold
    exactly; ``total`` is the source's total rounded to the minor unit.
    """

    lines: list[Decimal]
    subtotal: Decimal
    tax: Decimal
    shipping: Decimal
    discount: Decimal
    total: Decimal


def document_amounts(document: Document) -> DocumentAmounts:
    """The figures of ``document`` an ERP should store (see the module docstring), lines net of tax.

    Lines are allocated to the rounded subtotal; tax, shipping and discount to the rounded
    total less that subtotal (discount counted negatively). A document whose line amounts
    include tax (``tax_inclusive``) is booked net, as the ERPs' expense and item lines are: each
    line less its ``tax_amount``, the tax on its own.

    Raises:
        UnbookableAmountsError: a tax-inclusive document whose tax is not all carried by its
            lines (which line would the rest come out of?).
    """
    currency = document.currency
    if document.tax_inclusive:
        carried = sum((line.tax_amount or Decimal(0) for line in document.line_items), Decimal(0))
        if carried != document.tax_total:
            raise UnbookableAmountsError(
                f"{document.object_type} {document.canonical_id}: its line amounts include tax, but the lines carry "
                f"{carried} {currency} of the {document.tax_total} {currency} tax: the net lines cannot be known"
            )
        nets = [line.amount - (line.tax_amount or Decimal(0)) for line in document.line_items]
        subtotal = quantize(sum(nets, Decimal(0)), currency)
        total = quantize(document.total, currency)
        lines = allocate(nets, subtotal, currency)
        tax, shipping, minus_discount = allocate(
            [document.tax_total, document.shipping_total, -document.discount_total], total - subtotal, currency
        )
        return DocumentAmounts(lines, subtotal, tax, shipping, -minus_discount, total)
    subtotal = quantize(document.subtotal, currency)
    total = quantize(document.total, currency)
    lines = allocate([line.amount for line in document.line_items], subtotal, currency)
    tax, shipping, minus_discount = allocate(
        [document.tax_total, document.shipping_total, -document.discount_total], total - subtotal, currency
    )
    return DocumentAmounts(lines, subtotal, tax, shipping, -minus_discount, total)


def as_source_lines(document: Document, booked_nets: list[Decimal]) -> list[Decimal]:
    """The ERP's net line amounts as the source states its lines (read-back).

    For a tax-inclusive document each line's ``tax_amount`` is added back (the ERP holds the net
    line, the source the gross); otherwise the amounts are returned as they are.
    """
    if not document.tax_inclusive:
        return list(booked_nets)
    return [
        amount + (line.tax_amount or Decimal(0)) for line, amount in zip(document.line_items, booked_nets, strict=False)
    ]
