"""Golden ERP request bodies of the QuickBooks and Xero mappings, validated against the vendors' descriptions.

For each document of :func:`tests.connectors.erp_documents.golden_cases` the body the mapping
builds is compared with ``tests/golden/erp/<erp>/<case>.json`` (regenerate with
``LEDGERFLOW_UPDATE_GOLDEN=1`` after reviewing a deliberate change), checked against
``Finance.xsd`` / ``xero_accounting.yaml``, and totalled the way the ERP totals it: the total
must be the source's to the cent.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledgerflow.connectors.base import PermanentError
from ledgerflow.connectors.quickbooks import mapping as qbo
from ledgerflow.connectors.quickbooks.sandbox import FinanceSchema
from ledgerflow.connectors.xero import mapping as xero
from ledgerflow.connectors.xero.sandbox import XeroSchemas
from ledgerflow.contracts import Bill, Document, Invoice, Reference
from ledgerflow.core.outbound.client import dumps_json, loads_json
from tests.connectors.erp_documents import (
    QBO_OPTIONS,
    QBO_TAX_CODE_OPTIONS,
    XERO_OPTIONS,
    golden_cases,
    unbookable_cases,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "erp"
UPDATE = os.environ.get("LEDGERFLOW_UPDATE_GOLDEN") == "1"
QBO_TAX_CODE_CASES = {"invoice_tax_inclusive", "purchase_order_tax"}
"""Cases booked with TxnTaxDetail (option tax_code); the others with tax lines."""


def qbo_body(doc: Document, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    refs = [
        qbo.LineRefs(str(line.gl_account.accounting_id) if line.gl_account else "600394") for line in doc.line_items
    ]
    if isinstance(doc, Bill):
        return "Bill", qbo.bill_body(doc, vendor_id="56", accounts=refs, options=options)
    if isinstance(doc, Invoice):
        items = [qbo.LineRefs("1") for _ in doc.line_items]
        return "Invoice", qbo.invoice_body(doc, customer_id="58", items=items, options=options)
    return "PurchaseOrder", qbo.purchase_order_body(doc, vendor_id="56", accounts=refs, options=options)  # type: ignore[arg-type]


def xero_body(doc: Document, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    accounts = [str(line.gl_account.accounting_custom_id) if line.gl_account else "429" for line in doc.line_items]
    contact = "430fa14a-f945-44d3-9f97-5df5e28441b8"
    if isinstance(doc, Bill | Invoice):
        return "Invoice", xero.invoice_body(doc, contact_id=contact, accounts=accounts, options=options)
    return "PurchaseOrder", xero.purchase_order_body(doc, contact_id=contact, accounts=accounts, options=options)  # type: ignore[arg-type]


def qbo_total(body: dict[str, Any]) -> Decimal:
    """``TotalAmt`` as QuickBooks computes it (detail lines + TxnTaxDetail.TotalTax − discount lines)."""
    total = Decimal(0)
    for line in body["Line"]:
        amount = Decimal(str(line["Amount"]))
        total += -amount if line["DetailType"] == "DiscountLineDetail" else amount
    return total + Decimal(str(body.get("TxnTaxDetail", {}).get("TotalTax", 0)))


def xero_total(body: dict[str, Any]) -> Decimal:
    """``Total`` as Xero computes it from ``LineAmountTypes``."""
    lines = sum((Decimal(str(line["LineAmount"])) for line in body["LineItems"]), Decimal(0))
    tax = sum((Decimal(str(line.get("TaxAmount", 0))) for line in body["LineItems"]), Decimal(0))
    if body["LineAmountTypes"] == "Exclusive":
        return lines + tax
    return lines


def _golden(erp: str, case: str, body: dict[str, Any]) -> None:
    path = GOLDEN / erp / f"{case}.json"
    actual = json.loads(dumps_json(body))
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert actual == json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def finance(shared_dir: Path) -> FinanceSchema:
    return FinanceSchema(shared_dir / "specs" / "Finance.xsd")


@pytest.fixture(scope="module")
def xero_schemas(shared_dir: Path) -> XeroSchemas:
    return XeroSchemas(shared_dir / "specs" / "xero_accounting.yaml")


@pytest.mark.parametrize("case", sorted(golden_cases("quickbooks")))
def test_quickbooks_golden_bodies(case: str, finance: FinanceSchema) -> None:
    doc = golden_cases("quickbooks")[case]
    options = QBO_TAX_CODE_OPTIONS if case in QBO_TAX_CODE_CASES else QBO_OPTIONS
    entity, body = qbo_body(doc, options)
    _golden("quickbooks", case, body)
    assert finance.validate(entity, loads_json(dumps_json(body))) == []
    assert qbo_total(body) == doc.total
    stored = qbo.stored_document({**body, "TotalAmt": qbo_total(body)}, source_lines=len(doc.line_items))
    assert [line.amount for line in stored.lines or ()] == [line.amount for line in doc.line_items]
    assert (stored.tax_total, stored.shipping_total, stored.discount_total) == (
        doc.tax_total,
        doc.shipping_total,
        doc.discount_total,
    )


@pytest.mark.parametrize("case", sorted(golden_cases("xero")))
def test_xero_golden_bodies(case: str, xero_schemas: XeroSchemas) -> None:
    doc = golden_cases("xero")[case]
    schema, body = xero_body(doc, XERO_OPTIONS)
    _golden("xero", case, body)
    assert xero_schemas.validate(schema, json.loads(dumps_json(body))) == []
    assert xero_total(body) == doc.total
    stored = xero.stored_document(
        {
            **body,
            "Total": xero_total(body),
            "TotalTax": sum(Decimal(str(li.get("TaxAmount", 0))) for li in body["LineItems"]),
        },
        source_lines=len(doc.line_items),
    )
    assert [line.amount for line in stored.lines or ()] == [line.amount for line in doc.line_items]
    assert stored.tax_total == doc.tax_total


def test_xero_picks_line_amount_types_from_the_document() -> None:
    cases = golden_cases("xero")
    assert xero_body(cases["bill_rounding"], XERO_OPTIONS)[1]["LineAmountTypes"] == "NoTax"
    assert xero_body(cases["invoice_tax_shipping_discount"], XERO_OPTIONS)[1]["LineAmountTypes"] == "Exclusive"
    assert xero_body(cases["invoice_tax_inclusive"], XERO_OPTIONS)[1]["LineAmountTypes"] == "Inclusive"


@pytest.mark.parametrize("case", sorted(unbookable_cases()))
def test_what_an_erp_cannot_hold_fails_with_the_reason(case: str) -> None:
    doc, words = unbookable_cases()[case]
    for build, options in ((qbo_body, QBO_OPTIONS), (xero_body, XERO_OPTIONS)):
        with pytest.raises(PermanentError) as err:
            build(doc, options)
        assert err.value.code == "erp.unsupported_amount"
        assert words in err.value.message


@pytest.mark.parametrize(
    ("option", "erp"),
    [
        ("shipping_account", "quickbooks"),
        ("discount_account", "quickbooks"),
        ("tax_account", "quickbooks"),
        ("shipping_account", "xero"),
        ("discount_account", "xero"),
        ("tax_account", "xero"),
    ],
)
def test_a_missing_adjustment_option_is_named_never_defaulted(option: str, erp: str) -> None:
    doc = golden_cases(erp)["bill_tax_shipping_discount_credit"]
    if erp == "quickbooks":
        options = {k: v for k, v in QBO_OPTIONS.items() if k != option}
        with pytest.raises(PermanentError) as err:
            qbo_body(doc, {**options, "default_expense_account": "7"})
    else:
        # Header tax (tax on freight) needs tax_account even when lines carry TaxType.
        options = {k: v for k, v in XERO_OPTIONS.items() if k != option}
        with pytest.raises(PermanentError) as err:
            xero_body(doc, options)
    assert err.value.code == "config.missing"
    assert option in err.value.message


def test_xero_tax_without_a_tax_type_goes_on_the_tax_line_or_names_the_options() -> None:
    doc = golden_cases("xero")["bill_tax_shipping_discount_credit"]
    untyped = doc.model_copy(
        update={"line_items": [line.model_copy(update={"tax_rate": None}) for line in doc.line_items]}
    )
    _, body = xero_body(untyped, XERO_OPTIONS)
    assert body["LineAmountTypes"] == "NoTax"
    assert [li["LineAmount"] for li in body["LineItems"] if li["Description"] == "Tax"] == [Decimal("24.00")]
    assert xero_total(body) == doc.total
    with pytest.raises(PermanentError, match="default_tax_type"):
        xero_body(untyped, {k: v for k, v in XERO_OPTIONS.items() if k != "tax_account"})


def _tracked_bill(cost_code: dict[str, str]) -> Document:
    doc = golden_cases("xero")["bill_rounding"]
    line = doc.line_items[0].model_copy(update={"cost_code": Reference.model_validate(cost_code)})
    return doc.model_copy(update={"line_items": [line, *doc.line_items[1:]]})


def test_quickbooks_cost_codes_are_classes_by_id_never_dropped() -> None:
    with_id = _tracked_bill({"accounting_id": "5000000000000012345", "name": "Framing"})
    _, body = qbo_body(with_id, QBO_OPTIONS)
    assert body["Line"][0]["AccountBasedExpenseLineDetail"]["ClassRef"] == {"value": "5000000000000012345"}
    unmapped = _tracked_bill({"source_id": "cc_330", "name": "Framing"})
    with pytest.raises(PermanentError) as err:
        qbo_body(unmapped, QBO_OPTIONS)
    assert err.value.code == "reference.unresolved"
    assert "'Framing'" in err.value.message
    assert "unresolved_tracking: omit" in err.value.message
    _, omitted = qbo_body(unmapped, {**QBO_OPTIONS, "unresolved_tracking": "omit"})
    assert "ClassRef" not in omitted["Line"][0]["AccountBasedExpenseLineDetail"]


def test_xero_cost_codes_are_tracking_options_in_the_configured_category(xero_schemas: XeroSchemas) -> None:
    doc = _tracked_bill({"accounting_custom_id": "330", "name": "Framing"})
    options = {**XERO_OPTIONS, "tracking_categories": {"cost_code": "Cost Code"}}
    _, body = xero_body(doc, options)
    assert body["LineItems"][0]["Tracking"] == [{"Name": "Cost Code", "Option": "330"}]
    assert xero_schemas.validate("Invoice", json.loads(dumps_json(body))) == []
    with pytest.raises(PermanentError) as err:
        xero_body(doc, XERO_OPTIONS)
    assert err.value.code == "reference.unresolved"
    assert "tracking_categories.cost_code" in err.value.message
    _, omitted = xero_body(doc, {**XERO_OPTIONS, "unresolved_tracking": "omit"})
    assert "Tracking" not in omitted["LineItems"][0]
