"""Xero reader: reference data and payments with ``If-Modified-Since`` and ``page``, projects.

Through the connector's authenticated client (``xero-tenant-id``, same 60/min and 5-concurrent
limits as its writes; ``shared/reference/erp_apis.md`` §2, ``xero_accounting.yaml``; Accounting
API 2.0 unless said otherwise):

=============  =================  ==============================================================
kind           entity             request
=============  =================  ==============================================================
vendor         Contact            ``GET /Contacts?where=IsSupplier==true&order=UpdatedDateUTC ASC
                                  &includeArchived=true&page=1&pageSize=<n>`` + ``If-Modified-Since``
customer       Contact            same with ``IsCustomer==true``
gl_account     Account            ``GET /Accounts?order=UpdatedDateUTC ASC`` + ``If-Modified-Since``
                                  (not paged by Xero: one read returns every changed account)
tax_rate       TaxRate            ``GET /TaxRates`` (no change filter in Xero: snapshot, diffed by hash)
tracking       TrackingCategory   ``GET /TrackingCategories?includeArchived=true`` (snapshot; options inside)
payment        Payment            ``GET /Payments?order=UpdatedDateUTC ASC&page=1&pageSize=<n>``
                                  + ``If-Modified-Since``
project        Project            Xero Projects API ``GET <projects base>/projects?page=<p>&pageSize=500
                                  &states=INPROGRESS,CLOSED`` (no change filter: snapshot, every page)
=============  =================  ==============================================================

Fields: ``ContactID`` / ``AccountID`` / ``TaxType`` / ``TrackingCategoryID`` (id), account
``Code`` and ``TaxType`` (code), ``Name``, ``ContactStatus`` / ``Status`` (``ARCHIVED`` or
``DELETED`` → inactive), ``UpdatedDateUTC`` (``/Date(<ms>+0000)/``) as ``updated_at``.
``If-Modified-Since`` is sent as ISO 8601 UTC with milliseconds (Xero accepts both that and an
HTTP-date); records changed at exactly that time come back again and are skipped by the cursor.

Payments: ``PaymentID`` (id), ``Reference`` (code), the invoice's ``Contact.Name`` (name),
``Status`` ``DELETED`` → inactive (amounts kept as Xero answers them), ``Amount`` (amount, in the
invoice's currency; JSON numbers read as ``Decimal``, never float), ``Invoice.CurrencyCode``
(currency; None when Xero names none), ``Date`` (paid_on; ``/Date(ms+0000)/`` or ``YYYY-MM-DD``).
``applied_to`` is the one document paid: ``Invoice`` (``InvoiceID``; ``Type`` ``ACCPAY`` → object
type ``bill``, ``ACCREC`` → ``invoice``, else by ``PaymentType``), or ``CreditNote`` /
``Prepayment`` / ``Overpayment`` (their ids) for the payments Xero lists on those — published too,
never booked by ledgerflow, so with no source. Tenant, source and source id of a document
ledgerflow booked come from the binder, one look-up per page
(:func:`ledgerflow.connectors.binder.documents_of_erp_records`); None otherwise.

Payments ledgerflow booked itself (a source's payment written by the connector: binder key of
object type ``payment`` on the payment's own id) are published like any other; a writer that must
not send a payment back to the source it came from recognises them with
``documents_of_erp_records(state, record.connection, [record.erp_id])`` holding ``(erp_id, "payment")``.

Projects (kind ``project``, entity ``Project``): ``projectId`` (id), ``name``, ``contactId``
(parent_id: the customer contact), ``status`` ``CLOSED`` → inactive; ``updated_at`` None (the
Projects API has no change time). Assumptions, from developer.xero.com "Projects" (the Projects
API is not in ``shared/reference`` nor ``shared/specs``): base ``https://api.xero.com/projects.xro/2.0``
(the reader's ``projects_url`` overrides it; default the connection's ``base_url`` +
``/projects.xro/2.0``), camelCase JSON ``{"pagination": {"page", "pageSize", "pageCount",
"itemCount"}, "items": [...]}``, ``pageSize`` at most 500, the same ``xero-tenant-id`` header and
OAuth token (scope ``projects.read``). Projects are read last: an organisation without the
Projects API fails that source only after payments were read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.binder import BinderKey, documents_of_erp_records
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.connectors.xero.connector import XeroConnector
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["XeroReader", "parse_xero_date"]

MAX_PAGE_SIZE = 1000
"""Xero's ceiling on ``pageSize``."""

PROJECTS_PAGE_SIZE = 500
"""The Xero Projects API's ceiling on ``pageSize``."""

PROJECTS_PATH = "/projects.xro/2.0"
"""Path of the Xero Projects API below the connection's ``base_url``."""

_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")

_PLURAL = {
    "Contact": "Contacts",
    "Account": "Accounts",
    "TaxRate": "TaxRates",
    "TrackingCategory": "TrackingCategories",
    "Payment": "Payments",
}
_ID = {
    "Contact": "ContactID",
    "Account": "AccountID",
    "TaxRate": "TaxType",
    "TrackingCategory": "TrackingCategoryID",
    "Payment": "PaymentID",
}
_PAID = {
    "Invoice": "InvoiceID",
    "CreditNote": "CreditNoteID",
    "Prepayment": "PrepaymentID",
    "Overpayment": "OverpaymentID",
}
"""Documents a Xero payment can be on → their id field."""
_OBJECT_TYPE = {"ACCPAY": "bill", "ACCREC": "invoice", "ACCPAYPAYMENT": "bill", "ACCRECPAYMENT": "invoice"}
"""Invoice ``Type`` / ``PaymentType`` → the canonical object type ledgerflow books such a document from."""


def parse_xero_date(value: str) -> datetime:
    """``/Date(1574275974000+0000)/`` (Xero's JSON dates) or ISO 8601 → aware UTC datetime.

    Raises:
        ValueError: neither form.
    """
    match = _MS_DATE.match(value)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)
    return utc(datetime.fromisoformat(value))


def _decimal(value: Any, raw: dict[str, Any]) -> Decimal:
    """A Xero amount as ``Decimal``: JSON numbers arrive as Decimal or int (:func:`loads_json`), never float.

    Raises:
        InvalidResponse: not a number.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidResponse(f"Xero payment {raw.get('PaymentID')}: Amount {value!r} is not a number")
    return Decimal(str(value))


def if_modified_since(since: datetime) -> str:
    """The ``If-Modified-Since`` value for ``since``: ISO 8601 UTC with milliseconds, no offset."""
    return utc(since).replace(tzinfo=None).isoformat(timespec="milliseconds")


class XeroReader(ReferenceReader):
    """Reads suppliers, customers, accounts, tax rates, tracking categories, payments and projects of one organisation.

    Args:
        connector: the organisation's connector.
        page_size: records per page.
        projects_url: base URL of the Xero Projects API (default: the connection's ``base_url``
            + :data:`PROJECTS_PATH`).
    """

    erp: ClassVar[str] = "xero"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "Contact"),
        ReferenceSource("customer", "Contact"),
        ReferenceSource("gl_account", "Account"),
        ReferenceSource("tax_rate", "TaxRate", incremental=False),
        ReferenceSource("tracking", "TrackingCategory", incremental=False),
        ReferenceSource("payment", "Payment"),
        ReferenceSource("project", "Project", incremental=False),
    )

    def __init__(self, connector: XeroConnector, *, page_size: int = 100, projects_url: str | None = None) -> None:
        super().__init__(connector, page_size=page_size)
        self.xero = connector
        self._projects_url = projects_url

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """One page of ``source`` (see the module docstring).

        Raises:
            RetriableError, PermanentError: as the connector's client raises them.
            InvalidResponse: the answer does not carry the entity's list.
        """
        if source.entity == "Project":
            return await self._projects(source)
        plural = _PLURAL[source.entity]
        params: dict[str, str | int] = {}
        headers: dict[str, str] = {}
        paged = source.entity in ("Contact", "Payment")
        if source.incremental:
            params["order"] = "UpdatedDateUTC ASC"
            if since is not None:
                headers["If-Modified-Since"] = if_modified_since(since)
        if source.entity == "Contact":
            flag = "IsSupplier" if source.kind == "vendor" else "IsCustomer"
            params.update({"where": f"{flag}==true", "includeArchived": "true"})
        if paged:
            params["page"] = 1
            params["pageSize"] = min(limit, MAX_PAGE_SIZE)
        if source.entity == "TrackingCategory":
            params["includeArchived"] = "true"
        response = await self.xero.client().request(
            "GET", f"/{plural}", operation=f"{plural.lower()}.read", params=params, headers=headers
        )
        body = loads_json(response.content) if response.content else {}
        if not isinstance(body, dict) or not isinstance(body.get(plural, []), list):
            raise InvalidResponse(f"Xero {plural}: the answer carries no {plural} list")
        found = body.get(plural) or []
        if source.entity == "Payment":
            bound = await self._bound_documents(found)
            records = [self._payment(source, raw, bound) for raw in found]
        else:
            records = [self._record(source, raw) for raw in found]
        complete = not paged or len(found) < min(limit, MAX_PAGE_SIZE)
        return ReferencePage(records, complete=complete)

    @property
    def projects_url(self) -> str:
        """Base URL of the Xero Projects API of this connection."""
        if self._projects_url:
            return self._projects_url.rstrip("/")
        return self.xero.api_root("Xero", "ledgerflow.connectors.xero.sandbox") + PROJECTS_PATH

    async def _projects(self, source: ReferenceSource) -> ReferencePage:
        """Every project, page after page of :data:`PROJECTS_PAGE_SIZE` (a snapshot source)."""
        records: list[ReferenceRecord] = []
        page = 1
        while True:
            params: dict[str, str | int] = {"page": page, "pageSize": PROJECTS_PAGE_SIZE, "states": "INPROGRESS,CLOSED"}
            response = await self.xero.client().request(
                "GET", f"{self.projects_url}/projects", operation="projects.read", params=params
            )
            body = loads_json(response.content) if response.content else {}
            items = body.get("items") if isinstance(body, dict) else None
            pagination = body.get("pagination") if isinstance(body, dict) else None
            if not isinstance(items, list) or not isinstance(pagination, dict):
                raise InvalidResponse("Xero projects: the answer carries no items list and pagination")
            for raw in items:
                records.append(
                    ReferenceRecord(
                        kind=source.kind,
                        erp=self.erp,
                        connection=self.connection,
                        entity=source.entity,
                        erp_id=str(raw["projectId"]),
                        name=str(raw.get("name") or ""),
                        active=raw.get("status") != "CLOSED",
                        parent_id=str(raw["contactId"]) if raw.get("contactId") else None,
                        erp_record=raw,
                    )
                )
            if not items or page >= int(pagination.get("pageCount") or 1):
                return ReferencePage(records, complete=True)
            page += 1

    async def _bound_documents(self, payments: list[dict[str, Any]]) -> dict[tuple[str, str], BinderKey]:
        ids = {str(raw["Invoice"]["InvoiceID"]) for raw in payments if (raw.get("Invoice") or {}).get("InvoiceID")}
        if not ids:
            return {}
        return await documents_of_erp_records(self.xero.state, self.connection, ids)

    def _payment(
        self, source: ReferenceSource, raw: dict[str, Any], bound: dict[tuple[str, str], BinderKey]
    ) -> ReferenceRecord:
        amount = _decimal(raw.get("Amount"), raw)
        applied: list[AppliedDocument] = []
        document: dict[str, Any] = {}
        for entity, id_field in _PAID.items():
            candidate = raw.get(entity)
            if isinstance(candidate, dict) and candidate.get(id_field):
                document = candidate
                object_type = _OBJECT_TYPE.get(str(candidate.get("Type") or raw.get("PaymentType") or ""))
                ours = bound.get((str(candidate[id_field]), object_type or "")) if entity == "Invoice" else None
                applied.append(
                    AppliedDocument(
                        entity=entity,
                        erp_id=str(candidate[id_field]),
                        amount=amount,
                        object_type=ours.object_type if ours else None,
                        tenant=ours.tenant if ours else None,
                        source=ours.source if ours else None,
                        source_id=ours.source_id if ours else None,
                    )
                )
                break
        contact = document.get("Contact") if isinstance(document.get("Contact"), dict) else {}
        stamp = raw.get("UpdatedDateUTC")
        paid = raw.get("Date")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(raw["PaymentID"]),
            code=str(raw["Reference"]) if raw.get("Reference") else None,
            name=str((contact or {}).get("Name") or ""),
            active=raw.get("Status") != "DELETED",
            updated_at=parse_xero_date(str(stamp)) if stamp else None,
            amount=amount,
            currency=str(document["CurrencyCode"]) if document.get("CurrencyCode") else None,
            paid_on=parse_xero_date(str(paid)).date() if paid else None,
            applied_to=applied,
            erp_record=raw,
        )

    def _record(self, source: ReferenceSource, raw: dict[str, Any]) -> ReferenceRecord:
        stamp = raw.get("UpdatedDateUTC")
        status = str(raw.get("ContactStatus") or raw.get("Status") or "ACTIVE")
        code = raw.get("Code") if source.entity == "Account" else raw.get("TaxType")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(raw[_ID[source.entity]]),
            code=str(code) if code else None,
            name=str(raw.get("Name") or ""),
            active=status not in ("ARCHIVED", "DELETED"),
            updated_at=parse_xero_date(str(stamp)) if stamp and source.incremental else None,
            erp_record=raw,
        )
