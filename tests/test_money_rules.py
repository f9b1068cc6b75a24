"""The canonical contract's money rules: source amounts authoritative, minor units, rounding tolerance, totals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ledgerflow.contracts import Bill, Invoice, minor_unit


def _bill(lines: list[dict[str, Any]], *, currency: str = "USD", **header: Any) -> Bill:
    subtotal = sum((Decimal(str(line["amount"])) for line in lines), Decimal(0))
    tax = Decimal(str(header.pop("tax_total", "0")))
    shipping = Decimal(str(header.pop("shipping_total", "0")))
    discount = Decimal(str(header.pop("discount_total", "0")))
    inclusive = bool(header.pop("tax_inclusive", False))
    total = header.pop("total", subtotal + shipping - discount + (0 if inclusive else tax))
    return Bill.model_validate(
        {
            "canonical_id": "mercoa:bill:b1",
            "tenant": "t",
            "source": "mercoa",
            "source_id": "b1",
            "source_event": "invoice.created",
            "vendor": {"name": "V"},
            "bill_date": "2024-03-01",
            "currency": currency,
            "line_items": [{"line_number": i + 1, **line} for i, line in enumerate(lines)],
            "subtotal": str(subtotal),
            "tax_total": str(tax),
            "shipping_total": str(shipping),
            "discount_total": str(discount),
            "tax_inclusive": inclusive,
            "total": str(total),
            **header,
        }
    )


@pytest.mark.parametrize("amount", ["1.01", "1.00"])
def test_commercial_and_bankers_rounding_of_a_line_are_both_accepted(amount: str) -> None:
    # 3 × 0.335 = 1.005: half-up gives 1.01, half-even 1.00. Either is the source's valid amount.
    bill = _bill([{"quantity": "3", "unit_price": "0.335", "amount": amount}])
    assert bill.total == Decimal(amount)


def test_a_line_more_than_one_minor_unit_off_is_rejected_with_both_figures() -> None:
    with pytest.raises(ValidationError, match=r"quantity 3 × unit price 0.335 = 1.005 USD, but amount is 0.99"):
        _bill([{"quantity": "3", "unit_price": "0.335", "amount": "0.99"}])


def test_unit_prices_keep_their_precision() -> None:
    bill = _bill([{"quantity": "7", "unit_price": "0.142857", "amount": "1.00"}])
    assert bill.line_items[0].unit_price == Decimal("0.142857")
    assert Bill.model_validate_json(bill.model_dump_json()).line_items[0].unit_price == Decimal("0.142857")


@pytest.mark.parametrize(
    ("currency", "good", "bad"),
    [("USD", "10.50", "10.505"), ("JPY", "1050", "1050.5"), ("KWD", "10.505", "10.5055"), ("BHD", "0.125", "0.1251")],
)
def test_amounts_are_whole_minor_units_of_their_currency(currency: str, good: str, bad: str) -> None:
    assert _bill([{"amount": good}], currency=currency).total == Decimal(good)
    with pytest.raises(ValidationError, match=rf"line 1 amount {bad} {currency} has more decimals than {currency}'s"):
        _bill([{"amount": bad}], currency=currency)
    with pytest.raises(ValidationError, match=rf"tax total {bad} {currency} has more decimals"):
        _bill([{"amount": good}], currency=currency, tax_total=bad, total=Decimal(good) + Decimal(bad))


def test_minor_units_come_from_cldr() -> None:
    assert (minor_unit("USD"), minor_unit("JPY"), minor_unit("KWD")) == (Decimal("0.01"), Decimal(1), Decimal("0.001"))


def test_header_tax_shipping_discount_and_credit_lines_reconcile() -> None:
    bill = _bill(
        [{"amount": "100.00", "tax_amount": "8.00"}, {"amount": "-20.00", "tax_amount": "-1.60"}],
        tax_total="7.90",
        shipping_total="12.50",
        discount_total="5.00",
    )
    assert bill.total == Decimal("95.40")
    assert bill.header_tax == Decimal("1.50")


def test_the_total_must_be_exact() -> None:
    with pytest.raises(ValidationError, match=r"= 110.00 USD, but total is 110.01"):
        _bill([{"amount": "100.00"}], tax_total="10.00", total="110.01")


def test_tax_inclusive_line_amounts_already_hold_the_tax() -> None:
    bill = _bill([{"amount": "120.00", "tax_amount": "20.00"}], tax_total="20.00", tax_inclusive=True)
    assert bill.total == Decimal("120.00")
    with pytest.raises(ValidationError, match=r"tax 20.00 included"):
        _bill([{"amount": "120.00"}], tax_total="20.00", tax_inclusive=True, total="140.00")


def test_a_line_discount_is_deducted_from_quantity_times_unit_price() -> None:
    bill = _bill([{"quantity": "4", "unit_price": "25", "discount_amount": "10.00", "amount": "90.00"}])
    assert bill.line_items[0].discount_amount == Decimal("10.00")
    with pytest.raises(ValidationError, match=r"− discount 10.00"):
        _bill([{"quantity": "4", "unit_price": "25", "discount_amount": "10.00", "amount": "100.00"}])


def test_invoices_follow_the_same_rules() -> None:
    with pytest.raises(ValidationError, match=r"has more decimals than JPY's 0"):
        Invoice.model_validate(
            {
                "canonical_id": "monite:invoice:r1",
                "tenant": "t",
                "source": "monite",
                "source_id": "r1",
                "source_event": "receivable.created",
                "customer": {"name": "C"},
                "invoice_date": "2024-03-01",
                "currency": "JPY",
                "line_items": [{"line_number": 1, "amount": "99.5"}],
                "subtotal": "99.5",
                "total": "99.5",
            }
        )
