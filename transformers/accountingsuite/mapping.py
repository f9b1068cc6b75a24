"""AccountingSuite webhook records → vendor/customer, item, sales order, invoice, payment.

Each webhook body is the record itself, flattened: fields, ``<Field>_Key`` reference keys,
tabular sections as arrays, plus ``resource``, ``action`` (create/update/delete),
``TenantNumber``, ``api_code`` (record key) and custom fields in ``AdditionalAttributes``
(``[{LineNumber, Property, Value, TextString}]``) — seed 002 "Response Payload" tables,
``sources.md`` §4.1. Field → canonical (seed 002 section in brackets):

=============================================  ==================================================
AccountingSuite                                canonical
=============================================  ==================================================
``api_code`` [all]                             ``source_id``
``action`` = delete [all]                      master data: ``action = delete``, inactive;
                                               documents: ``action = void``
``AdditionalAttributes[].Property/Value``      ``custom_fields["attr.<Property>"]``
``Identifier``, ``Code``, ``RefNum``           ``custom_fields`` (identifier, code, ref_num)
[Customer/Vendor] ``Vendor`` / ``Customer``    vendor and/or customer record
  ``Description`` (Company Name), ``FullName``  ``name``, ``legal_name``
  ``USTaxID`` / ``BusinessIdentificationNo``   ``tax_id``
  ``DefaultCurrency``, ``InArchive``           ``currency``, ``active``
[Item] ``Code``, ``Description``, ``Type``     ``code``, ``name``, ``kind`` (Product → inventory, Service → service)
  ``Price``, ``Cost``                          ``sales_price``, ``purchase_cost``
  ``IncomeAccount(_Key)``,
  ``InventoryOrExpenseAccount``                ``income_account``, ``expense_account``
[SaleOrder/SalesInvoice/CashSale]
  ``Company``/``Company_Key``                  ``customer`` (name / source id)
  ``Number``, ``Date``, ``DueDate``, ``Currency`` number, dates, currency
  ``LineItems[]``: ``LineNumber``, ``LineID``,
  ``Product``/``Product_Key``,
  ``ProductDescription``, ``QtyUnits``,
  ``PriceUnits``, ``LineTotal``, ``Project``,
  ``Class``                                    ``line_items`` (item, quantity, unit price, amount,
                                               project, business_unit = class)
  ``SalesTax``, ``Shipping``, ``Discount``,
  ``DocumentTotal``                            ``tax_total``, ``shipping_total``,
                                               ``discount_total``, ``total``
  ``Posted`` / ``Cancelled`` / ``Paid`` /
  ``Balance``                                  ``status``, ``amount_paid``
  ``Memo``                                     ``memo``
[CashSale] ``PaymentMethod``, ``BankAccount``  its payment: ``method``, ``bank_account``
[CashReceipt] ``CashPayment``, ``Date``,
  ``PaymentMethod``, ``BankAccount``,
  ``LineItems[].Document_Key/Payment``         payment ``amount``, ``payment_date``, ``method``,
                                               ``bank_account``, ``applied_to`` invoices
=============================================  ==================================================

Dates (seed 002 field tables):

=====================  =========================================================  ======================
AccountingSuite        meaning (seed 002)                                         canonical
=====================  =========================================================  ======================
``Date``               "Sales Invoice document (transaction) date" (l.1943–1947);  ``invoice_date`` /
                       the date the document posts to the general ledger           ``order_date`` /
                       when ``Posted`` (l.1913–1917); ISO 8601 with an offset —    ``payment_date``
                       its calendar date as written, never shifted to UTC
``DueDate``            "The due date for payment on the document" (l.2117–2121)   ``due_date``
``DeliveryDate``       planned or actual delivery date (l.2129–2133)              not booked (not an
                                                                                  accounting date)
=====================  =========================================================  ======================

Reference keys (``<Field>_Key``) are AccountingSuite's own record keys: they are source ids
(``source_id``), never ERP ids; the ERP matches by the name AccountingSuite sends beside them
or by the connection's ``reference_map``.

Amounts are major units (JSON numbers → ``Decimal`` via their text). A CashSale is a sale
paid on the spot: it yields an invoice and a payment applied to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ledgerflow.contracts import (
    Action,
    AppliedTo,
    CanonicalRecord,
    ContractError,
    Customer,
    Invoice,
    Item,
    LineItem,
    Party,
    Payment,
    Reference,
    SalesOrder,
    Source,
    Vendor,
    canonical_id,
)
from ledgerflow.transformers.base import (
    RawEvent,
    SkipEvent,
    as_date,
    as_decimal,
    as_int,
    as_objects,
    require,
)

__all__ = ["map_cash_receipt", "map_cash_sale", "map_company", "map_item", "map_sales_invoice", "map_sales_order"]


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _record(event: RawEvent) -> dict[str, Any]:
    if not isinstance(event.payload, dict):
        raise ContractError("AccountingSuite webhook body is not a JSON object")
    record = event.payload
    as_objects(record.get("LineItems"), "LineItems")
    if record.get("AdditionalAttributes") is not None and not isinstance(record["AdditionalAttributes"], list):
        raise ContractError("AdditionalAttributes must be a JSON array")
    return record


def _deleted(event: RawEvent) -> bool:
    action = str(event.payload.get("action") or event.event_type.rsplit(".", 1)[-1])
    return action.strip().lower() == "delete"


def _ref(record: dict[str, Any], field: str) -> Reference | None:
    key, name = _text(record.get(f"{field}_Key")), _text(record.get(field))
    return Reference(source_id=key, name=name) if key or name else None


def _custom(record: dict[str, Any]) -> dict[str, str]:
    fields = {
        label: str(record[key])
        for key, label in (("Identifier", "identifier"), ("Code", "code"), ("RefNum", "ref_num"))
        if _text(record.get(key))
    }
    for attr in record.get("AdditionalAttributes") or []:
        if isinstance(attr, dict) and _text(attr.get("Property")) and attr.get("Value") is not None:
            fields[f"attr.{attr['Property']}"] = str(attr["Value"])
    return fields


def _common(event: RawEvent, record: dict[str, Any], object_type: str) -> dict[str, Any]:
    source_id = str(require(record, "api_code"))
    return {
        "canonical_id": canonical_id(event.tenant, Source.ACCOUNTINGSUITE, object_type, source_id),
        "tenant": event.tenant,
        "source": Source.ACCOUNTINGSUITE,
        "source_id": source_id,
        "source_event": event.event_type,
        "custom_fields": _custom(record),
    }


def map_company(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``Companies`` → a vendor (``Vendor`` flag) and/or a customer (``Customer`` flag).

    Raises:
        SkipEvent: the company is neither (e.g. only an ``Employee``).
        contracts.ContractError: no ``api_code`` or no name.

    """
    record = _record(event)
    models: list[type[Party]] = [m for m, flag in ((Vendor, "Vendor"), (Customer, "Customer")) if record.get(flag)]
    if not models:
        raise SkipEvent("AccountingSuite company is neither vendor nor customer")
    name = _text(record.get("Description")) or _text(record.get("FullName"))
    if not name:
        raise ContractError("AccountingSuite company has no Description or FullName")
    deleted = _deleted(event)
    return [
        model(
            **_common(event, record, model.object_type),
            action=Action.DELETE if deleted else Action.UPSERT,
            name=name,
            legal_name=_text(record.get("FullName")),
            tax_id=_text(record.get("USTaxID")) or _text(record.get("BusinessIdentificationNo")),
            currency=_text(record.get("DefaultCurrency")),
            active=not (deleted or record.get("InArchive")),
        )
        for model in models
    ]


def map_item(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``Item`` → :class:`~contracts.Item`.

    Raises:
        contracts.ContractError: no ``api_code`` or no name; malformed price or cost.

    """
    record = _record(event)
    name = _text(record.get("Description")) or _text(record.get("Code"))
    if not name:
        raise ContractError("AccountingSuite item has no Description or Code")
    kind = {"product": "inventory", "service": "service"}.get(str(record.get("Type", "")).strip().lower(), "other")
    deleted = _deleted(event)
    return [
        Item(
            **_common(event, record, "item"),
            action=Action.DELETE if deleted else Action.UPSERT,
            code=_text(record.get("Code")),
            name=name,
            description=_text(record.get("vendor_description")),
            kind=kind,
            sales_price=as_decimal(record["Price"], "Price") if record.get("Price") is not None else None,
            purchase_cost=as_decimal(record["Cost"], "Cost") if record.get("Cost") is not None else None,
            income_account=_ref(record, "IncomeAccount"),
            expense_account=_ref(record, "InventoryOrExpenseAccount") or _ref(record, "COGSAccount"),
            active=not (deleted or record.get("InArchive")),
        )
    ]


def _lines(record: dict[str, Any]) -> list[LineItem]:
    lines: list[LineItem] = []
    for index, raw in enumerate(as_objects(record.get("LineItems"), "LineItems"), start=1):
        where = f"LineItems[{index - 1}]"
        qty = as_decimal(raw["QtyUnits"], f"{where}.QtyUnits") if raw.get("QtyUnits") is not None else None
        price = as_decimal(raw["PriceUnits"], f"{where}.PriceUnits") if raw.get("PriceUnits") is not None else None
        amount = as_decimal(require(raw, "LineTotal"), f"{where}.LineTotal")
        if raw.get("Discount") and qty is not None and price is not None:
            price = None  # LineTotal is net of the line discount, so quantity × price no longer equals it
        lines.append(
            LineItem(
                line_number=as_int(raw["LineNumber"], f"{where}.LineNumber") if raw.get("LineNumber") else index,
                source_id=_text(raw.get("LineID")),
                description=_text(raw.get("ProductDescription")),
                quantity=qty,
                unit_price=price,
                amount=amount,
                item=_ref(raw, "Product"),
                project=_ref(raw, "Project"),
                business_unit=_ref(raw, "Class"),
            )
        )
    if not lines:
        raise ContractError("AccountingSuite document has no LineItems")
    return lines


def _document(event: RawEvent, record: dict[str, Any], object_type: str) -> dict[str, Any]:
    lines = _lines(record)
    customer = _ref(record, "Company")
    if customer is None:
        raise ContractError("AccountingSuite document has no Company (customer)")
    discount = abs(as_decimal(record["Discount"], "Discount")) if record.get("Discount") else Decimal(0)
    status = "approved" if record.get("Posted", True) else "draft"
    if record.get("Cancelled"):
        status = "void"
    deleted = _deleted(event)
    return {
        **_common(event, record, object_type),
        "action": Action.VOID if deleted or status == "void" else Action.UPSERT,
        "customer": customer,
        "currency": str(require(record, "Currency")),
        "line_items": lines,
        "subtotal": sum((line.amount for line in lines), Decimal(0)),
        "tax_total": as_decimal(record["SalesTax"], "SalesTax") if record.get("SalesTax") is not None else Decimal(0),
        "shipping_total": as_decimal(record["Shipping"], "Shipping") if record.get("Shipping") else Decimal(0),
        "discount_total": discount,
        "total": as_decimal(require(record, "DocumentTotal"), "DocumentTotal"),
        "status": status,
        "memo": _text(record.get("Memo")),
    }


def map_sales_order(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``SaleOrder``/``SalesOrder`` → :class:`~contracts.SalesOrder`.

    Raises:
        contracts.ContractError / pydantic.ValidationError: missing fields or totals that do not reconcile.

    """
    record = _record(event)
    return [
        SalesOrder(
            **_document(event, record, "sales_order"),
            number=_text(record.get("Number")),
            order_date=as_date(require(record, "Date"), "Date"),
        )
    ]


def _invoice(event: RawEvent, record: dict[str, Any]) -> Invoice:
    fields = _document(event, record, "invoice")
    total: Decimal = fields["total"]
    balance = as_decimal(record["Balance"], "Balance") if record.get("Balance") is not None else None
    paid = total - balance if balance is not None else (total if record.get("Paid") else Decimal(0))
    if fields["status"] == "approved" and record.get("Paid"):
        fields["status"] = "paid"
    elif fields["status"] == "approved" and Decimal(0) < paid < total:
        fields["status"] = "partially_paid"
    order = next(
        (_ref(line, "Order") for line in as_objects(record.get("LineItems"), "LineItems") if line.get("Order_Key")),
        None,
    )
    project = _ref(record, "Project")
    return Invoice(
        **fields,
        invoice_number=_text(record.get("Number")),
        invoice_date=as_date(require(record, "Date"), "Date"),
        due_date=as_date(record["DueDate"], "DueDate") if record.get("DueDate") else None,
        amount_paid=paid,
        project=project,
        sales_order=order,
    )


def map_sales_invoice(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``SalesInvoice`` → :class:`~contracts.Invoice`.

    Raises:
        contracts.ContractError / pydantic.ValidationError: missing fields or totals that do not reconcile.

    """
    return [_invoice(event, _record(event))]


def _payment_common(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "direction": "incoming",
        "payment_date": as_date(require(record, "Date"), "Date"),
        "currency": str(require(record, "Currency")),
        "method": _text(record.get("PaymentMethod")),
        "reference": _text(record.get("Number")),
        "bank_account": _ref(record, "BankAccount"),
    }


def map_cash_sale(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``CashSale`` → an :class:`~contracts.Invoice` and the :class:`~contracts.Payment` that settled it.

    A cash sale that is not ``Posted`` (a draft, seed 002: "Draft documents do not post to the
    general ledger") yields only its draft invoice: no money is booked as received for it.

    Raises:
        contracts.ContractError / pydantic.ValidationError: as :func:`map_sales_invoice`; a zero total.

    """
    record = _record(event)
    if not record.get("Posted", True) and not _deleted(event):
        return [_invoice(event, record)]
    invoice = _invoice(event, {**record, "Paid": True})
    invoice = invoice.model_copy(
        update={"amount_paid": invoice.total, "status": "void" if invoice.status == "void" else "paid"}
    )
    payment = Payment(
        **_common(event, record, "payment"),
        action=invoice.action,
        **_payment_common(record),
        party=invoice.customer,
        amount=invoice.total,
        status="reversed" if invoice.action == Action.VOID else "completed",
        applied_to=[
            AppliedTo(
                document=Reference(source_id=invoice.source_id, name=invoice.invoice_number),
                document_canonical_id=invoice.canonical_id,
                amount=invoice.total,
            )
        ],
    )
    return [invoice, payment]


def map_cash_receipt(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``CashReceipt`` → an incoming :class:`~contracts.Payment` applied to its invoices.

    Raises:
        SkipEvent: the receipt moves no money (it only applies credit memos), or it is a draft
            (not ``Posted``: no money is booked as received for it).
        contracts.ContractError: missing ``api_code``, ``Company``, ``Date``, ``Currency``.

    """
    record = _record(event)
    if not record.get("Posted", True) and not _deleted(event):
        raise SkipEvent("AccountingSuite cash receipt is a draft (Posted false): booked once it is posted")
    amount_raw = record.get("CashPayment") if record.get("CashPayment") is not None else record.get("DocumentTotal")
    amount = as_decimal(amount_raw, "CashPayment") if amount_raw is not None else Decimal(0)
    if amount <= 0:
        raise SkipEvent("AccountingSuite cash receipt moves no money (credit memo application only)")
    party = _ref(record, "Company")
    if party is None:
        raise ContractError("AccountingSuite cash receipt has no Company (customer)")
    applied = [
        AppliedTo(
            document=Reference(source_id=str(line["Document_Key"]), name=_text(line.get("Document"))),
            document_canonical_id=canonical_id(
                event.tenant, Source.ACCOUNTINGSUITE, "invoice", str(line["Document_Key"])
            ),
            amount=as_decimal(require(line, "Payment"), f"LineItems[{i}].Payment"),
        )
        for i, line in enumerate(as_objects(record.get("LineItems"), "LineItems"))
        if line.get("Document_Key") and line.get("Payment")
    ]
    deleted = _deleted(event)
    return [
        Payment(
            **_common(event, record, "payment"),
            action=Action.VOID if deleted else Action.UPSERT,
            **_payment_common(record),
            party=party,
            amount=amount,
            status="reversed" if deleted else "completed",
            applied_to=applied,
        )
    ]
