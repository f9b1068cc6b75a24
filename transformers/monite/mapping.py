"""Monite payables, receivables, counterparts and payment records → canonical records.

Field names follow the Monite Partner API (2024-05-25) schemas as published in
``team-monite/monite-sdk`` (``PayableResponseSchema``, ``LineItemResponse``,
``ReceivablesInvoiceResponsePayload``, ``ReceivablesResponseItem``,
``CounterpartOrganizationRootResponse``, ``PaymentRecordResponse``), the webhook envelope in
``sources.md`` §3.1 and the accounting guide (seed 001). **Amounts are minor units** (``1250`` =
12.50); percentages are minor units too (``1250`` = 12.5 %).

Payable → Bill:

=======================================  ================================================
``id``                                   ``source_id``
``counterpart_id``, ``counterpart.name``,
``counterpart.tax_id``/``vat_number``,
``counterpart.email``, ``.address``      ``vendor``
``document_id``                          ``bill_number`` (vendor's invoice number)
``issued_at`` / ``due_date``             ``bill_date`` / ``due_date``
``currency``                             ``currency``
line items: ``id``, ``name``,
``description``, ``quantity``,
``unit_price``, ``subtotal``,
``tax`` (% minor), ``tax_amount``,
``ledger_account_id``,
``accounting_tax_rate_id``               ``line_items`` (amount = ``subtotal``; ``gl_account`` and
                                         ``tax_rate`` references, see *Ledger accounts*;
                                         seed 001 l.97 requires both)
``subtotal``, ``tax_amount``,
``discount`` (invoice-level),
``total_amount`` (``amount``)            ``subtotal``, ``tax_total``, ``discount_total``, ``total``
``status``                               ``status`` (waiting_to_be_paid → approved; canceled/rejected → void)
``description``                          ``memo``
``partner_metadata``                     ``custom_fields`` (``partner_metadata.<key>``)
``updated_at``                           ``source_updated_at``
=======================================  ================================================

Receivable (``type = invoice``) → Invoice: ``counterpart_id``/``counterpart_name`` → customer,
``document_id`` → number, ``issue_date``/``due_date``, ``line_items[].quantity`` ×
``product.price.value`` (``product.ledger_account_id`` → GL), ``total_vat_amount``,
``total_amount``, ``amount_paid``; statuses canceled/uncollectible → void (seed 001 l.101).

*Discounts* (seed 001 l.110–112: "Accounts Receivable invoices with invoice-level discounts
cannot be pushed to accounting systems. However, invoices with line item discounts are pushed").
A receivable with an invoice-level ``discount`` is refused with that reason (dead letter), never
booked without it. A line item's ``discount`` (``{amount, type}``: minor units when ``type =
amount``, percent minor units — ``1000`` = 10 % — when ``percentage``) is the line's
``discount_amount``; its ``amount`` is net of it (quantity × price − discount, the canonical line
rule), so the ERP's tax is computed on the discounted amount as Monite does.
``total_before_vat`` of the line, when sent, is authoritative for the discounted amount;
otherwise a percentage discount is rounded half-up to the minor unit. A payable's
invoice-level ``discount`` is a bill discount (``discount_total``).

*Ledger accounts.* ``ledger_account_id`` and ``accounting_tax_rate_id`` are Monite's own ids of
the ledger accounts and tax rates it pulled from the accounting system (seed 001 l.333–363), not
ERP ids: they go to ``source_accounting_id``. Enrichment fetches ``GET /ledger_accounts/{id}`` and
``GET /accounting_tax_rates/{id}``; the account's ``nominal_code`` (the ERP's account code, e.g.
``200`` Sales) and the tax rate's ``code`` become ``accounting_custom_id``, their ``name`` the
reference name (a 404 leaves the reference with the Monite id only). Whether
``accounting_tax_rate_id`` could also be the platform's own id is not stated in the public
material; it is treated as Monite's, so it is never sent unresolved. A connection's
``options.reference_map`` overrides both
(:mod:`ledgerflow.connectors.references`); without enrichment the connector matches by that map
or falls back to its default account.

Dates (``PayableResponseSchema``, ``ReceivablesInvoiceResponsePayload``, ``PaymentRecordResponse``):

==================================  ==========================================  =======================
Monite                              meaning                                     canonical
==================================  ==========================================  =======================
payable ``issued_at``               date the supplier issued the invoice        ``bill_date``
receivable ``issue_date``           date the invoice was issued                 ``invoice_date``
``due_date``                        payment due date                            ``due_date``
(none)                              Monite sends no posting date                the ERP posts on the
                                                                                document date
payment record ``paid_at``          when the money moved                        ``payment_date``
``created_at`` / ``updated_at``     record bookkeeping in Monite, not           ``source_updated_at``
                                    accounting dates                            (``updated_at``)
==================================  ==========================================  =======================

Counterpart → vendor if ``is_vendor``, customer if ``is_customer`` (both →
two records). Payment record → payment: ``amount``, ``currency``, ``paid_at``, ``object``
(``{id, type: payable|receivable}`` → direction and ``applied_to``), party from the document;
only a paid record is booked (a ``planned_payment_date`` without ``paid_at`` is skipped, a
canceled or failed ``status`` voids the booked payment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ledgerflow.contracts import (
    Action,
    Address,
    AppliedTo,
    Bill,
    CanonicalRecord,
    ContractError,
    Customer,
    Invoice,
    LineItem,
    Party,
    Payment,
    Reference,
    Source,
    Vendor,
    VendorRef,
    canonical_id,
    currency_precision,
)
from ledgerflow.core.outbound.json_api import EnrichmentError
from ledgerflow.transformers.base import (
    Enrichers,
    RawEvent,
    SkipEvent,
    as_date,
    as_datetime,
    as_decimal,
    as_object,
    as_objects,
    require,
)

__all__ = ["enrich", "map_counterpart", "map_payable", "map_payment_record", "map_receivable", "minor_to_major"]

_PAYABLE_STATUS = {
    "draft": "draft",
    "new": "submitted",
    "approve_in_progress": "submitted",
    "waiting_to_be_paid": "approved",
    "partially_paid": "partially_paid",
    "paid": "paid",
    "canceled": "void",
    "rejected": "void",
}
_RECEIVABLE_STATUS = {
    "draft": "draft",
    "issued": "approved",
    "overdue": "approved",
    "partially_paid": "partially_paid",
    "paid": "paid",
    "canceled": "void",
    "uncollectible": "void",
    "expired": "void",
    "deleted": "void",
}
_DOCUMENT_PATH = {"payable": "/payables/{id}", "receivable": "/receivables/{id}"}
_PAYMENT_UNDONE = frozenset({"canceled", "cancelled", "failed", "declined", "reversed", "refunded"})
"""Payment record ``status`` values that mean the money did not (or no longer) move."""


def minor_to_major(value: Any, currency: str, what: str) -> Decimal:
    """A Monite minor-unit integer as a major-unit ``Decimal`` (``1250``, ``USD`` → ``12.50``).

    Raises:
        contracts.ContractError: not a number, not a whole number of minor units, or unknown currency.

    """
    amount = as_decimal(value, what)
    if abs(amount) >= MAX_MINOR_UNITS:
        raise ContractError(f"{what} is out of range: {value!r}")
    if amount != amount.to_integral_value():
        raise ContractError(f"{what} is not a whole number of minor units: {value!r}")
    try:
        digits = currency_precision(currency)
    except Exception as exc:  # Babel raises several types for unknown codes
        raise ContractError(f"{what}: unknown currency {currency!r}") from exc
    return amount.scaleb(-digits)


MAX_MINOR_UNITS = Decimal(10) ** 15
"""Largest absolute minor-unit amount accepted (10 trillion in major units)."""
MAX_QUANTITY = Decimal(10) ** 9
"""Largest absolute quantity accepted; with :data:`MAX_MINOR_UNITS` a line product stays within
the 28 significant digits of Decimal's default context, so cents are never lost."""


def _quantity(value: Any, what: str) -> Decimal:
    quantity = as_decimal(value, what)
    if abs(quantity) >= MAX_QUANTITY:
        raise ContractError(f"{what} is out of range: {value!r}")
    return quantity


def _half_up(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded half-up (commercial rounding) to ``currency``'s minor unit.

    Raises:
        ContractError: the amount has more digits than ``Decimal`` arithmetic holds (28).
    """
    try:
        return amount.quantize(Decimal(1).scaleb(-currency_precision(currency)), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise ContractError(f"amount {amount} {currency} is out of range") from None


def _percent(value: Any, what: str) -> Decimal:
    return as_decimal(value, what).scaleb(-2)


def _object_id(payload: dict[str, Any]) -> str | None:
    obj = payload.get("object")
    found = payload.get("object_id") or (obj.get("id") if isinstance(obj, dict) else None)
    return str(found) if found else None


async def enrich(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Fetch the object a Monite webhook points to (and a payable's line items, a payment's document).

    Fills ``enrichment["object"]``, ``["line_items"]`` (payables) and ``["document"]`` (payment
    records). A tenant without Monite API options gets the event back unchanged.

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: a Monite API call failed after retries.

    """
    client = enrichers.get("monite").for_tenant(event.tenant)
    payload = event.payload if isinstance(event.payload, dict) else {}
    object_id = _object_id(payload)
    if client is None or not object_id:
        return event
    entity_id = payload.get("entity_id")
    kind = event.event_type.split(".", 1)[0].lower()
    found: dict[str, Any] = {}
    if kind == "payable":
        found["object"] = await client.get(f"/payables/{object_id}", entity_id=entity_id)
        items = await client.get(f"/payables/{object_id}/line_items", entity_id=entity_id)
        found["line_items"] = items.get("data", []) if isinstance(items, dict) else items
    elif kind == "receivable":
        found["object"] = await client.get(f"/receivables/{object_id}", entity_id=entity_id)
    elif kind == "counterpart":
        found["object"] = await client.get(f"/counterparts/{object_id}", entity_id=entity_id)
    else:
        record = await client.get(f"/payment_records/{object_id}", entity_id=entity_id)
        found["object"] = record
        document = record.get("object") or {}
        if document.get("type") in _DOCUMENT_PATH and document.get("id"):
            path = _DOCUMENT_PATH[document["type"]].format(id=document["id"])
            found["document"] = await client.get(path, entity_id=entity_id)
    if kind in {"payable", "receivable"}:
        lines = found.get("line_items") or (found.get("object") or {}).get("line_items") or []
        ledger_ids, tax_ids = _accounting_ids(lines)
        found["ledger_accounts"] = {
            i: await _optional_get(client, f"/ledger_accounts/{i}", entity_id) for i in sorted(ledger_ids)
        }
        found["tax_rates"] = {
            i: await _optional_get(client, f"/accounting_tax_rates/{i}", entity_id) for i in sorted(tax_ids)
        }
    return dataclasses.replace(event, enrichment={**event.enrichment, **found})


async def _optional_get(client: Any, path: str, entity_id: Any) -> Any:
    """``GET path``, or ``{}`` when Monite answers 404 (the line keeps its Monite id only).

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: any other failure after retries.
    """
    try:
        return await client.get_reference(path, entity_id=entity_id)
    except EnrichmentError as exc:
        if exc.status == 404:
            return {}
        raise


def _accounting_ids(lines: Any) -> tuple[set[str], set[str]]:
    """Monite ledger account and accounting tax rate ids used by payable lines or receivable products."""
    ledger: set[str] = set()
    tax: set[str] = set()
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        raw_product = line.get("product")
        product: dict[str, Any] = raw_product if isinstance(raw_product, dict) else {}
        for node in (line, product):
            if node.get("ledger_account_id"):
                ledger.add(str(node["ledger_account_id"]))
            if node.get("accounting_tax_rate_id"):
                tax.add(str(node["accounting_tax_rate_id"]))
    return ledger, tax


def _account_ref(event: RawEvent, ledger_id: Any) -> Reference | None:
    """The GL account reference of a Monite ``ledger_account_id`` (see *Ledger accounts*)."""
    if not ledger_id:
        return None
    account = as_object(
        as_object(event.enrichment.get("ledger_accounts"), "ledger accounts").get(str(ledger_id)), "ledger account"
    )
    code, name = account.get("nominal_code"), account.get("name")
    return Reference(
        source_accounting_id=str(ledger_id),
        accounting_custom_id=str(code) if code not in (None, "") else None,
        name=str(name) if name else None,
    )


def _tax_ref(event: RawEvent, tax_id: Any) -> Reference | None:
    """The tax rate reference of a Monite ``accounting_tax_rate_id`` (see *Ledger accounts*)."""
    if not tax_id:
        return None
    rate = as_object(as_object(event.enrichment.get("tax_rates"), "tax rates").get(str(tax_id)), "tax rate")
    code, name = rate.get("code"), rate.get("name")
    return Reference(
        source_accounting_id=str(tax_id),
        accounting_custom_id=str(code) if code not in (None, "") else None,
        name=str(name) if name else None,
    )


def _object(event: RawEvent) -> dict[str, Any]:
    obj = event.enrichment.get("object") or (event.payload.get("object") if isinstance(event.payload, dict) else None)
    if not isinstance(obj, dict) or set(obj) <= {"id", "type"}:
        raise SkipEvent(f"Monite {event.event_type} is a thin webhook; configure the Monite API options to fetch it")
    return obj


def _is_deleted(event: RawEvent) -> bool:
    return event.event_type.lower().rsplit(".", 1)[-1] in {"deleted", "delete"}


def _address(value: Any) -> Address | None:
    raw = as_object(value, "address")
    if not raw:
        return None
    return Address(
        line1=raw.get("line1"),
        line2=raw.get("line2"),
        city=raw.get("city"),
        region=raw.get("state"),
        postal_code=raw.get("postal_code"),
        country=raw.get("country"),
    )


def _common(event: RawEvent, obj: dict[str, Any], object_type: str) -> dict[str, Any]:
    source_id = str(require(obj, "id"))
    return {
        "canonical_id": canonical_id(event.tenant, Source.MONITE, object_type, source_id),
        "tenant": event.tenant,
        "source": Source.MONITE,
        "source_id": source_id,
        "source_event": event.event_type,
        "source_updated_at": as_datetime(obj["updated_at"], "updated_at") if obj.get("updated_at") else None,
    }


def _payable_lines(event: RawEvent, raw_lines: list[dict[str, Any]], currency: str) -> list[LineItem]:
    lines: list[LineItem] = []
    for index, raw in enumerate(raw_lines, start=1):
        where = f"line_items[{index - 1}]"
        qty = _quantity(raw["quantity"], f"{where}.quantity") if raw.get("quantity") is not None else None
        unit = (
            minor_to_major(raw["unit_price"], currency, f"{where}.unit_price")
            if raw.get("unit_price") is not None
            else None
        )
        if raw.get("subtotal") is not None:
            amount = minor_to_major(raw["subtotal"], currency, f"{where}.subtotal")
        elif qty is not None and unit is not None:
            amount = _half_up(qty * unit, currency)  # no subtotal sent: the commercial rounding, never 3 decimals
        else:
            raise ContractError(f"Monite payable {where} has neither subtotal nor quantity and unit_price")
        ledger = raw.get("ledger_account_id")
        tax_ref = raw.get("accounting_tax_rate_id")
        lines.append(
            LineItem(
                line_number=index,
                source_id=raw.get("id"),
                description=raw.get("description") or raw.get("name"),
                quantity=qty,
                unit_price=unit,
                amount=amount,
                tax_amount=minor_to_major(raw["tax_amount"], currency, f"{where}.tax_amount")
                if raw.get("tax_amount") is not None
                else None,
                tax_rate_percent=_percent(raw["tax"], f"{where}.tax") if raw.get("tax") is not None else None,
                tax_rate=_tax_ref(event, tax_ref),
                gl_account=_account_ref(event, ledger),
            )
        )
    return lines


def map_payable(event: RawEvent) -> Sequence[CanonicalRecord]:
    """A Monite payable → :class:`~contracts.Bill` (see the module table).

    Raises:
        SkipEvent: a thin webhook that was not enriched, or a payable without amounts yet (OCR draft).
        contracts.ContractError: missing id, currency, issue date or vendor; malformed amounts.
        pydantic.ValidationError: totals do not reconcile.

    """
    obj = _object(event)
    currency = str(require(obj, "currency"))
    total_raw = obj.get("total_amount") if obj.get("total_amount") is not None else obj.get("amount")
    if total_raw is None:
        raise SkipEvent("Monite payable has no amount yet (draft or OCR in progress)")
    total = minor_to_major(total_raw, currency, "total_amount")
    tax = minor_to_major(obj["tax_amount"], currency, "tax_amount") if obj.get("tax_amount") is not None else Decimal(0)
    raw_lines = as_objects(event.enrichment.get("line_items") or obj.get("line_items"), "line_items")
    lines = _payable_lines(event, raw_lines, currency)
    discount = minor_to_major(obj["discount"], currency, "discount") if obj.get("discount") else Decimal(0)
    subtotal = (
        minor_to_major(obj["subtotal"], currency, "subtotal")
        if obj.get("subtotal") is not None
        else total - tax + discount
    )
    if not lines:
        lines = [LineItem(line_number=1, description=obj.get("description"), amount=subtotal)]
    counterpart = as_object(obj.get("counterpart"), "counterpart")
    if not obj.get("counterpart_id") and not counterpart.get("name"):
        raise ContractError("Monite payable has no counterpart (vendor)")
    status = _PAYABLE_STATUS.get(str(obj.get("status", "")).lower())
    if status is None:
        raise ContractError(f"unknown Monite payable status {obj.get('status')!r}")
    void = _is_deleted(event) or status == "void"
    metadata = {
        f"partner_metadata.{k}": str(v) for k, v in as_object(obj.get("partner_metadata"), "partner_metadata").items()
    }
    return [
        Bill(
            **_common(event, obj, "bill"),
            action=Action.VOID if void else Action.UPSERT,
            custom_fields=metadata,
            vendor=VendorRef(
                source_id=obj.get("counterpart_id"),
                name=counterpart.get("name"),
                email=counterpart.get("email"),
                tax_id=counterpart.get("tax_id") or counterpart.get("vat_number"),
                address=_address(counterpart.get("address")),
            ),
            bill_number=obj.get("document_id"),
            bill_date=as_date(require(obj, "issued_at"), "issued_at"),
            due_date=as_date(obj["due_date"], "due_date") if obj.get("due_date") else None,
            currency=currency,
            line_items=lines,
            subtotal=subtotal,
            tax_total=tax,
            discount_total=discount,
            total=total,
            status=status,
            memo=obj.get("description"),
        )
    ]


def map_receivable(event: RawEvent) -> Sequence[CanonicalRecord]:
    """A Monite receivable of ``type = invoice`` → :class:`~contracts.Invoice`.

    Raises:
        SkipEvent: a thin webhook not enriched, or a quote / credit note.
        contracts.ContractError: missing id, currency, issue date, customer; malformed amounts.
        pydantic.ValidationError: totals do not reconcile.

    """
    obj = _object(event)
    if str(obj.get("type", "invoice")) != "invoice":
        raise SkipEvent(f"Monite receivable of type {obj.get('type')!r} is not an invoice")
    currency = str(require(obj, "currency"))
    _refuse_invoice_level_discount(obj, currency)
    lines: list[LineItem] = []
    for index, raw in enumerate(as_objects(obj.get("line_items"), "line_items")):
        lines += _receivable_lines(event, raw, currency, f"line_items[{index}]", len(lines) + 1)
    total = minor_to_major(require(obj, "total_amount"), currency, "total_amount")
    tax = (
        minor_to_major(obj["total_vat_amount"], currency, "total_vat_amount")
        if obj.get("total_vat_amount") is not None
        else Decimal(0)
    )
    if not lines:
        raise ContractError("Monite receivable has no line_items")
    subtotal = sum((line.amount for line in lines), Decimal(0))
    customer_id = obj.get("counterpart_id")
    if not customer_id:
        raise ContractError("Monite receivable has no counterpart_id (customer)")
    status = _RECEIVABLE_STATUS.get(str(obj.get("status", "")).lower())
    if status is None:
        raise ContractError(f"unknown Monite receivable status {obj.get('status')!r}")
    void = _is_deleted(event) or status == "void"
    return [
        Invoice(
            **_common(event, obj, "invoice"),
            action=Action.VOID if void else Action.UPSERT,
            customer=Reference(source_id=str(customer_id), name=obj.get("counterpart_name")),
            invoice_number=obj.get("document_id"),
            invoice_date=as_date(require(obj, "issue_date"), "issue_date"),
            due_date=as_date(obj["due_date"], "due_date") if obj.get("due_date") else None,
            currency=currency,
            line_items=lines,
            subtotal=subtotal,
            tax_total=tax,
            total=total,
            amount_paid=minor_to_major(obj["amount_paid"], currency, "amount_paid") if obj.get("amount_paid") else 0,
            status=status,
            memo=obj.get("memo"),
        )
    ]


def _refuse_invoice_level_discount(obj: dict[str, Any], currency: str) -> None:
    """Raise when a receivable carries an invoice-level discount (see *Discounts*).

    Raises:
        contracts.ContractError: naming the discount and the documented limitation.
    """
    discount = as_object(obj.get("discount"), "discount")
    if not discount.get("amount"):
        return
    kind = str(discount.get("type") or "amount")
    shown = (
        f"{_percent(discount['amount'], 'discount.amount')} %"
        if kind == "percentage"
        else f"{minor_to_major(discount['amount'], currency, 'discount.amount')} {currency}"
    )
    raise ContractError(
        f"Monite receivable {obj.get('id')} has an invoice-level discount of {shown}: Monite documents invoices "
        "with invoice-level discounts as not pushable to accounting systems (only line item discounts are); "
        "move the discount to the line items in Monite"
    )


def _receivable_lines(
    event: RawEvent, raw: dict[str, Any], currency: str, where: str, line_number: int
) -> list[LineItem]:
    """One receivable line item → its canonical line (net of its own discount, see *Discounts*)."""
    product = as_object(require(raw, "product"), f"{where}.product")
    qty = _quantity(require(raw, "quantity"), f"{where}.quantity")
    price = as_object(require(product, "price"), f"{where}.product.price")
    unit = minor_to_major(require(price, "value"), currency, f"{where}.product.price.value")
    vat = as_object(product.get("vat_rate"), f"{where}.product.vat_rate").get("value")
    gross = _half_up(qty * unit, currency)
    net = (
        minor_to_major(raw["total_before_vat"], currency, f"{where}.total_before_vat")
        if raw.get("total_before_vat") is not None
        else None
    )
    off: Decimal | None = None
    discount = as_object(raw.get("discount"), f"{where}.discount")
    if discount.get("amount"):
        if net is not None:
            off = gross - net
        elif str(discount.get("type") or "amount") == "percentage":
            rate = _percent(discount["amount"], f"{where}.discount.amount")
            off = _half_up(qty * unit * rate / 100, currency)
        else:
            off = minor_to_major(discount["amount"], currency, f"{where}.discount.amount")
        if off <= 0 or off > gross:
            raise ContractError(
                f"Monite receivable {where}: discount {off} {currency} is not within the line's {gross}"
            )
    # Monite's own line total (total_before_vat) is authoritative; without it the line is
    # quantity × price rounded half-up to the minor unit, less its discount
    amount = net if net is not None else gross - (off or 0)
    return [
        LineItem(
            line_number=line_number,
            source_id=product.get("id"),
            description=product.get("description") or product.get("name"),
            quantity=qty,
            unit_price=unit,
            amount=amount,
            discount_amount=off,
            tax_rate_percent=_percent(vat, f"{where}.product.vat_rate.value") if vat is not None else None,
            gl_account=_account_ref(event, product.get("ledger_account_id")),
            tax_rate=_tax_ref(event, product.get("accounting_tax_rate_id")),
            item=Reference(source_id=product.get("id"), name=product.get("name")),
        )
    ]


def map_counterpart(event: RawEvent) -> Sequence[CanonicalRecord]:
    """A Monite counterpart → vendor (``is_vendor``) and/or customer (``is_customer``).

    Raises:
        SkipEvent: a thin webhook not enriched, or a counterpart that is neither vendor nor customer.
        contracts.ContractError: no id or no name.

    """
    obj = _object(event)
    kind = str(obj.get("type", "organization"))
    details = as_object(obj.get(kind) or obj.get("organization") or obj.get("individual"), f"counterpart.{kind}")
    if kind == "individual":
        name = " ".join(p for p in (details.get("first_name"), details.get("last_name")) if p)
    else:
        name = str(details.get("legal_name") or "")
    legal = name or None
    if not name:
        raise ContractError(f"Monite counterpart {obj.get('id')} has no name")
    models: list[type[Party]] = []
    if details.get("is_vendor"):
        models.append(Vendor)
    if details.get("is_customer"):
        models.append(Customer)
    if not models:
        raise SkipEvent("Monite counterpart is neither vendor nor customer")
    deleted = _is_deleted(event)
    return [
        model(
            **_common(event, obj, model.object_type),
            action=Action.DELETE if deleted else Action.UPSERT,
            name=name,
            legal_name=legal,
            email=details.get("email"),
            phone=details.get("phone"),
            tax_id=details.get("tax_id") or details.get("vat_number"),
            address=_address(details.get("registered_address") or details.get("address")),
            active=not deleted,
        )
        for model in models
    ]


def map_payment_record(event: RawEvent) -> Sequence[CanonicalRecord]:
    """A Monite payment record → :class:`~contracts.Payment` against its payable or receivable.

    Only money that moved is booked: a record without ``paid_at`` but with a
    ``planned_payment_date`` is a scheduled payment (skipped with that reason); a record whose
    ``status`` says it was canceled or failed voids the payment booked for it (``action = void``).

    Raises:
        SkipEvent: a thin webhook not enriched, or a payment that is only planned.
        contracts.ContractError: missing amount, currency, date, document or its counterpart.

    """
    obj = _object(event)
    currency = str(require(obj, "currency"))
    status_text = str(obj.get("status") or "").lower()
    reversed_ = status_text in _PAYMENT_UNDONE or _is_deleted(event)
    if not obj.get("paid_at") and obj.get("planned_payment_date") and not reversed_:
        raise SkipEvent(
            f"Monite payment record {obj.get('id')} is planned for {obj['planned_payment_date']}, not paid: "
            "booked once it is paid"
        )
    target = as_object(require(obj, "object"), "object")
    doc_type = str(require(target, "type"))
    if doc_type not in _DOCUMENT_PATH:
        raise SkipEvent(f"Monite payment record for a {doc_type!r} is not mapped")
    doc_id = str(require(target, "id"))
    document = as_object(event.enrichment.get("document"), "fetched document")
    party_id = document.get("counterpart_id")
    if not party_id:
        raise ContractError(
            f"Monite payment record {obj.get('id')}: the {doc_type} {doc_id} and its counterpart are unknown"
        )
    party_name = document.get("counterpart_name") or as_object(document.get("counterpart"), "document.counterpart").get(
        "name"
    )
    amount = minor_to_major(require(obj, "amount"), currency, "amount")
    outgoing = doc_type == "payable"
    return [
        Payment(
            **_common(event, obj, "payment"),
            direction="outgoing" if outgoing else "incoming",
            party=Reference(source_id=str(party_id), name=party_name),
            action=Action.VOID if reversed_ else Action.UPSERT,
            payment_date=as_date(obj.get("paid_at") or require(obj, "planned_payment_date"), "paid_at"),
            currency=currency,
            amount=amount,
            status="failed" if reversed_ else "completed",
            reference=document.get("document_id"),
            applied_to=[
                AppliedTo(
                    document=Reference(source_id=doc_id, name=document.get("document_id")),
                    document_canonical_id=canonical_id(
                        event.tenant, Source.MONITE, "bill" if outgoing else "invoice", doc_id
                    ),
                    amount=amount,
                )
            ],
        )
    ]
