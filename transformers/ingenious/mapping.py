"""INGENIOUS.BUILD Custom Accounting Integration payloads → bill, purchase order, budget (and changes).

Every payload is ``{"name", "subject", "data": {…}}`` (seed 000 l.87–89); the object type is
the webhook URL's (one URL per object type, seed 000 l.61–62), carried as ``event.object_hint``.
The "Webhook Payloads reference" with full field lists is NOT FOUND publicly (``sources.md``
§1.1, §1.4), so only the fields below are read; those marked *assumed* are not in the seed
and follow the seed's naming style (snake_case, ``*_id``), pending a captured payload.

=====================================================  =====================================================
INGENIOUS ``data``                                     canonical
=====================================================  =====================================================
``id`` (seed l.91)                                     ``source_id``
``vendor_id`` (seed l.91)                              ``vendor.source_id``
``accounting_company_id`` / ``_custom_id`` (l.92)      ``vendor.source_accounting_id`` / ``accounting_custom_id``
``vendor_name`` *assumed*                              ``vendor.name`` (matching when unmapped, l.57)
``project_id``, ``accounting_project_*`` (l.91–92)     ``project`` reference
``contract_id`` (l.91)                                 bill/change ``purchase_order`` reference
``accounting_entity_*`` (l.92; entity = GL, l.27/49)   ``gl_account`` of lines that carry none
``accounting_cost_type_*``, ``accounting_business_unit_*`` (mapping requirements l.48–53; names by the
``accounting_*_id`` pattern)                           ``cost_type`` / ``business_unit`` references
``line_items[]`` (key per ``sources.md`` §1.4)         ``line_items`` / budget ``lines``
  ``id``, ``cost_code_id`` (l.91)                      line ``source_id``, ``cost_code.source_id``
  ``accounting_cost_code_*`` (l.92–93)                 ``cost_code`` accounting ids
  ``qty``, ``unit_value``, ``gross_value`` (l.93)      ``quantity``, ``unit_price``, ``amount`` (without
                                                       ``gross_value``: qty × unit value rounded half-up
                                                       to the currency's minor unit)
  ``description`` *assumed*                            ``description``
``number``, ``date``, ``due_date``, ``currency`` (else
the tenant's ``options.currency``),
``tax_value``, ``total_value``, ``title``,
``budget_id`` — all *assumed*                          document number, dates, currency, tax, total…
(a tenant whose payloads spell an assumed field differently sets ``options.field_names``,
e.g. ``{date: invoice_date, line_items: items}``: :func:`~ledgerflow.transformers.base.with_field_names`)
=====================================================  =====================================================

Defaults for fields seed 000 does not document: without ``date`` a record is dated by the tenant's
``options.date_default`` (``received``: the day the webhook was accepted, in ``options.timezone``,
default UTC), without ``currency`` it takes ``options.currency``; either default is written in the
record's ``custom_fields`` (``date_source``, ``currency_source``), and without the option the record
is dead-lettered naming it.

Dates (the Webhook Payloads reference is not public, so the names are *assumed*; seed 000 only
says records are sent when a user clicks "Sync to Accounting" on an approved record, l.19–21):

=================  ===============================================  ===========================
INGENIOUS          meaning                                          canonical
=================  ===============================================  ===========================
``date``           the document's date (invoice / contract date)    ``bill_date`` / ``order_date``
``due_date``       payment due date of an invoice                   ``due_date``
(none)             no posting date; the sync moment is not a date   the ERP posts on the document
                   of the document                                  date
=================  ===============================================  ===========================

Accounting ids follow the three documented cases (seed 000 l.96–101). ``accounting_*_id`` is
INGENIOUS's *internal* id of its accounting object (l.100: "Populated (INGENIOUS internal ID)"):
it goes to ``source_accounting_id`` and never reaches an ERP. ``accounting_*_custom_id`` is the
identifier in the accounting system (l.68–69) → ``accounting_custom_id``, which connectors send
or look up. So: both → the custom id is used; internal id only → the enrichment (:func:`enrich`)
fetched the ``custom_id`` from the Public API into ``event.enrichment["custom_ids"]``, and when
the object has none (or the tenant has no API options) the connector resolves the reference by
name or the connection's default; neither → the reference keeps only the INGENIOUS id and
name, for the connector to match by name or fall back to the connection's default.
What a custom id is depends on who wrote it
(``options.custom_ids``): ``number`` (a user keyed the ERP's account number, supplier number or
code: ``accounting_custom_id``, looked up as such) or ``erp_id`` (the ERP's internal id, as
ledgerflow's source writer writes it: ``accounting_id``, sent as is); the default is ``erp_id``
for a tenant with ``writeback.ingenious``, else ``number``. Amounts are major units (``Decimal``
through their text). There is only one action, "Sync to Accounting" (seed l.19) → ``upsert``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledgerflow.contracts import (
    Budget,
    BudgetChange,
    BudgetLine,
    CanonicalRecord,
    ContractError,
    LineItem,
    PurchaseOrder,
    PurchaseOrderChange,
    Reference,
    Source,
    VendorRef,
    canonical_id,
    currency_precision,
)
from ledgerflow.contracts.bill import Bill
from ledgerflow.transformers.base import (
    Enrichers,
    RawEvent,
    SkipEvent,
    as_date,
    as_decimal,
    as_object,
    require,
    with_field_names,
)

__all__ = [
    "ACCOUNTING_KINDS",
    "enrich",
    "map_budget",
    "map_budget_change",
    "map_vendor_contract",
    "map_vendor_contract_change",
    "map_vendor_invoice",
]

ACCOUNTING_KINDS = ("company", "project", "cost_code", "entity", "cost_type", "business_unit")
"""The ``accounting_<kind>_id`` / ``accounting_<kind>_custom_id`` pairs an INGENIOUS payload may carry."""


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _data(event: RawEvent) -> dict[str, Any]:
    """``data`` with the tenant's field names applied (``options.field_names``, see :func:`enrich`)."""
    data = require(event.payload, "data")
    if not isinstance(data, dict):
        raise ContractError("INGENIOUS payload field data is not an object")
    names = as_object(event.enrichment.get("defaults"), "defaults").get("field_names")
    return _named(data, names if isinstance(names, dict) else None)


def _named(data: dict[str, Any], names: dict[str, Any] | None) -> dict[str, Any]:
    if not names:
        return data
    data = with_field_names(data, names)
    lines = data.get("line_items")
    if isinstance(lines, list):
        data["line_items"] = [with_field_names(li, names) if isinstance(li, dict) else li for li in lines]
    return data


def _pairs(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for kind in ACCOUNTING_KINDS:
        acc_id = _text(node.get(f"accounting_{kind}_id"))
        if acc_id and not _text(node.get(f"accounting_{kind}_custom_id")):
            yield kind, acc_id


async def enrich(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Add the tenant's defaults; fetch the ``custom_id`` and name of accounting objects sent without one.

    ``enrichment["defaults"]``: the tenant's ``options.currency`` for INGENIOUS (the Webhook
    Payloads reference is not public, so ``currency`` is not guaranteed in a payload).

    Looks at ``data`` and each of ``data.line_items``; results go to
    ``enrichment["custom_ids"]["<kind>:<accounting id>"]`` (None when the object has none) and
    ``enrichment["names"]["<kind>:<accounting id>"]`` (for a name lookup in the ERP when the
    object has no custom id). A tenant without INGENIOUS API options gets the event back
    unchanged: its references then resolve by name or the connection's defaults.

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: the Public API call failed after retries.

    """
    defaults = (enrichers.get("defaults").for_tenant(event.tenant) or {}).get("ingenious")
    if defaults:
        event = dataclasses.replace(event, enrichment={**event.enrichment, "defaults": dict(defaults)})
    client = enrichers.get("ingenious").for_tenant(event.tenant)
    if client is None:
        return event
    data = event.payload.get("data") if isinstance(event.payload, dict) else None
    if not isinstance(data, dict):
        return event
    data = _named(data, (defaults or {}).get("field_names"))
    nodes = [data, *[line for line in data.get("line_items") or [] if isinstance(line, dict)]]
    wanted = dict.fromkeys(pair for node in nodes for pair in _pairs(node))
    if not wanted:
        return event
    custom_ids: dict[str, str | None] = {}
    names: dict[str, str | None] = {}
    for kind, acc_id in wanted:
        custom_ids[f"{kind}:{acc_id}"], names[f"{kind}:{acc_id}"] = await client.accounting_object(kind, acc_id)
    return dataclasses.replace(event, enrichment={**event.enrichment, "custom_ids": custom_ids, "names": names})


def _ref(
    event: RawEvent, node: dict[str, Any], kind: str, *, source_key: str | None, name_key: str | None = None
) -> Reference | None:
    acc_id = _text(node.get(f"accounting_{kind}_id"))
    custom = _text(node.get(f"accounting_{kind}_custom_id"))
    source_id = _text(node.get(source_key)) if source_key else None
    name = _text(node.get(name_key)) if name_key else None
    if acc_id and not custom:
        custom = _text(as_object(event.enrichment.get("custom_ids"), "fetched custom ids").get(f"{kind}:{acc_id}"))
        name = name or _text(as_object(event.enrichment.get("names"), "fetched names").get(f"{kind}:{acc_id}"))
    if not (acc_id or custom or source_id or name):
        return None
    if custom and as_object(event.enrichment.get("defaults"), "defaults").get("custom_ids") == "erp_id":
        # The tenant's custom ids are the ERP's own ids (ledgerflow's source writer wrote them).
        return Reference(source_id=source_id, source_accounting_id=acc_id, accounting_id=custom, name=name)
    return Reference(source_id=source_id, source_accounting_id=acc_id, accounting_custom_id=custom, name=name)


def _vendor(event: RawEvent, data: dict[str, Any]) -> VendorRef:
    ref = _ref(event, data, "company", source_key="vendor_id", name_key="vendor_name")
    if ref is None:
        raise ContractError("INGENIOUS record has no vendor: vendor_id, vendor_name and accounting_company_* are empty")
    return VendorRef(**ref.model_dump())


DATE_DEFAULTS = ("received",)
"""Values of the tenant option ``date_default`` (INGENIOUS): ``received`` = the day the webhook was
accepted (the user clicked "Sync to Accounting", seed 000) in the tenant's ``timezone`` (IANA name,
default UTC)."""


def _doc_date(event: RawEvent, data: dict[str, Any]) -> tuple[date, dict[str, str]]:
    """``data.date``, else the tenant's default (``options.date_default``), and the custom field saying so.

    The Webhook Payloads reference is not public (seed 000 names no date field), so a record
    without ``data.date`` is dated as the tenant configured, and ``custom_fields["date_source"]``
    records that the date is ledgerflow's default, not the source's.

    Raises:
        ContractError: no ``data.date`` and no usable ``date_default``/``timezone``.
    """
    if data.get("date") not in (None, ""):
        return as_date(data["date"], "data.date"), {}
    defaults = as_object(event.enrichment.get("defaults"), "defaults")
    rule = _text(defaults.get("date_default"))
    if rule not in DATE_DEFAULTS:
        raise ContractError(
            "INGENIOUS record has no data.date and the tenant sets no ingenious options.date_default "
            f"(one of: {', '.join(DATE_DEFAULTS)})"
        )
    zone_name = _text(defaults.get("timezone")) or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ContractError(f"tenant option ingenious timezone {zone_name!r} is not an IANA time zone") from None
    day = event.attributes.time.astimezone(zone).date()
    return day, {"date_source": f"received {day.isoformat()} {zone_name} (no data.date; tenant date_default)"}


def _currency_note(data: dict[str, Any]) -> dict[str, str]:
    """``{"currency_source": …}`` when the currency is the tenant's default rather than the record's."""
    return {} if _text(data.get("currency")) else {"currency_source": "tenant default (no data.currency)"}


def _currency(event: RawEvent, data: dict[str, Any]) -> str:
    """``data.currency``, else the tenant's default (``options.currency``, see :func:`enrich`).

    Raises:
        contracts.ContractError: neither is set (names both places to set it).
    """
    currency = _text(data.get("currency")) or _text(
        as_object(event.enrichment.get("defaults"), "defaults").get("currency")
    )
    if not currency:
        raise ContractError("INGENIOUS record has no data.currency and the tenant sets no ingenious options.currency")
    return currency


def _lines(event: RawEvent, data: dict[str, Any]) -> list[LineItem]:
    doc_gl = _ref(event, data, "entity", source_key=None)
    doc_cost_type = _ref(event, data, "cost_type", source_key=None)
    doc_unit = _ref(event, data, "business_unit", source_key=None)
    doc_project = _ref(event, data, "project", source_key="project_id")
    raw_lines = data.get("line_items") or []
    if not isinstance(raw_lines, list) or not raw_lines:
        raise ContractError("INGENIOUS record has no line_items")
    lines: list[LineItem] = []
    for index, raw in enumerate(raw_lines, start=1):
        where = f"data.line_items[{index - 1}]"
        if not isinstance(raw, dict):
            raise ContractError(f"{where} is not an object")
        qty = as_decimal(raw["qty"], f"{where}.qty") if raw.get("qty") is not None else None
        unit = as_decimal(raw["unit_value"], f"{where}.unit_value") if raw.get("unit_value") is not None else None
        if raw.get("gross_value") is not None:
            amount = as_decimal(raw["gross_value"], f"{where}.gross_value")
        elif qty is not None and unit is not None:
            # no line amount sent: the commercial rounding of quantity × unit value to the currency's
            # minor unit, never a three-decimal amount an ERP would reject or round its own way
            minor = Decimal(1).scaleb(-currency_precision(_currency(event, data)))
            try:
                amount = (qty * unit).quantize(minor, rounding=ROUND_HALF_UP)
            except InvalidOperation:
                raise ContractError(f"{where}: qty × unit_value ({qty} × {unit}) is out of range") from None
        else:
            raise ContractError(f"{where} has neither gross_value nor qty and unit_value")
        lines.append(
            LineItem(
                line_number=index,
                source_id=_text(raw.get("id")),
                description=_text(raw.get("description")),
                quantity=qty,
                unit_price=unit,
                amount=amount,
                cost_code=_ref(event, raw, "cost_code", source_key="cost_code_id"),
                gl_account=_ref(event, raw, "entity", source_key=None) or doc_gl,
                cost_type=_ref(event, raw, "cost_type", source_key=None) or doc_cost_type,
                business_unit=_ref(event, raw, "business_unit", source_key=None) or doc_unit,
                project=_ref(event, raw, "project", source_key="project_id") or doc_project,
            )
        )
    return lines


def _totals(data: dict[str, Any], lines: Sequence[LineItem]) -> tuple[Decimal, Decimal, Decimal]:
    subtotal = sum((line.amount for line in lines), Decimal(0))
    tax = as_decimal(data["tax_value"], "data.tax_value") if data.get("tax_value") is not None else Decimal(0)
    total = subtotal + tax
    if data.get("total_value") is not None:
        total = as_decimal(data["total_value"], "data.total_value")
    return subtotal, tax, total


def _common(event: RawEvent, data: dict[str, Any], object_type: str) -> dict[str, Any]:
    source_id = str(require(data, "id"))
    return {
        "canonical_id": canonical_id(event.tenant, Source.INGENIOUS, object_type, source_id),
        "tenant": event.tenant,
        "source": Source.INGENIOUS,
        "source_id": source_id,
        "source_event": event.event_type,
        "custom_fields": {k: str(v) for k in ("name", "subject") if (v := event.payload.get(k)) not in (None, "")},
    }


def map_vendor_invoice(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Vendor Invoice → :class:`~contracts.Bill` (see the module table).

    Raises:
        contracts.ContractError: a required field (``data.id``, ``date``, ``currency``, lines,
            a vendor) is missing or malformed.
        pydantic.ValidationError: totals do not reconcile, due date before invoice date.

    """
    data = _data(event)
    lines = _lines(event, data)
    subtotal, tax, total = _totals(data, lines)
    contract = _text(data.get("contract_id"))
    bill_date, notes = _doc_date(event, data)
    common = _common(event, data, "bill")
    common["custom_fields"] = {**common["custom_fields"], **notes, **_currency_note(data)}
    return [
        Bill(
            **common,
            vendor=_vendor(event, data),
            bill_number=_text(data.get("number")),
            bill_date=bill_date,
            due_date=as_date(data["due_date"], "data.due_date") if data.get("due_date") else None,
            currency=_currency(event, data),
            line_items=lines,
            subtotal=subtotal,
            tax_total=tax,
            total=total,
            status="approved",
            memo=_text(data.get("title")),
            project=_ref(event, data, "project", source_key="project_id"),
            business_unit=_ref(event, data, "business_unit", source_key=None),
            purchase_order=Reference(source_id=contract) if contract else None,
        )
    ]


def _commitment(event: RawEvent, object_type: str) -> dict[str, Any]:
    data = _data(event)
    lines = _lines(event, data)
    subtotal, tax, total = _totals(data, lines)
    order_date, notes = _doc_date(event, data)
    common = _common(event, data, object_type)
    common["custom_fields"] = {**common["custom_fields"], **notes, **_currency_note(data)}
    return {
        **common,
        "vendor": _vendor(event, data),
        "number": _text(data.get("number")),
        "title": _text(data.get("title")),
        "order_date": order_date,
        "currency": _currency(event, data),
        "line_items": lines,
        "subtotal": subtotal,
        "tax_total": tax,
        "total": total,
        "status": "approved",
        "project": _ref(event, data, "project", source_key="project_id"),
    }


def map_vendor_contract(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Vendor Contract → :class:`~contracts.PurchaseOrder`.

    Raises:
        contracts.ContractError / pydantic.ValidationError: as :func:`map_vendor_invoice`.

    """
    return [PurchaseOrder(**_commitment(event, "purchase_order"))]


def map_vendor_contract_change(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Vendor Contract Change → :class:`~contracts.PurchaseOrderChange` against ``contract_id``.

    Raises:
        contracts.ContractError: ``data.contract_id`` is missing (the change has no contract), or
            as :func:`map_vendor_invoice`.

    """
    data = _data(event)
    contract = str(require(data, "contract_id"))
    return [
        PurchaseOrderChange(
            **_commitment(event, "purchase_order_change"),
            purchase_order=Reference(source_id=contract),
        )
    ]


def _budget(event: RawEvent, object_type: str) -> dict[str, Any]:
    data = _data(event)
    items = _lines(event, data)
    lines = [
        BudgetLine(
            line_number=item.line_number,
            source_id=item.source_id,
            description=item.description,
            gl_account=item.gl_account,
            cost_code=item.cost_code,
            cost_type=item.cost_type,
            amount=item.amount,
        )
        for item in items
    ]
    total = sum((line.amount for line in lines), Decimal(0))
    if data.get("total_value") is not None:
        total = as_decimal(data["total_value"], "data.total_value")
    common = _common(event, data, object_type)
    common["custom_fields"] = {**common["custom_fields"], **_currency_note(data)}
    return {
        **common,
        "name": _text(data.get("title") or data.get("number")),
        "project": _ref(event, data, "project", source_key="project_id"),
        "currency": _currency(event, data),
        "start_date": as_date(data["date"], "data.date") if data.get("date") else None,
        "lines": lines,
        "total": total,
    }


def map_budget(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Budget → :class:`~contracts.Budget` (one line per cost code line).

    Raises:
        contracts.ContractError / pydantic.ValidationError: missing id, currency or lines; lines
            not adding up to ``total_value``.

    """
    return [Budget(**_budget(event, "budget"))]


def map_budget_change(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Budget Change → :class:`~contracts.BudgetChange`; line amounts are deltas (may be negative).

    Raises:
        contracts.ContractError / pydantic.ValidationError: as :func:`map_budget`.

    """
    data = _data(event)
    budget = _text(data.get("budget_id"))
    return [BudgetChange(**_budget(event, "budget_change"), budget=Reference(source_id=budget) if budget else None)]


def unknown(event: RawEvent) -> SkipEvent:
    """The :class:`SkipEvent` for an INGENIOUS route object this module does not know."""
    return SkipEvent(f"INGENIOUS object {event.object_hint!r} is not mapped")
