"""Xero reader: reference data with ``If-Modified-Since`` and ``page`` (Accounting API 2.0).

Through the connector's authenticated client (``xero-tenant-id``, same 60/min and 5-concurrent
limits as its writes; ``shared/reference/erp_apis.md`` §2, ``xero_accounting.yaml``):

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
=============  =================  ==============================================================

Fields: ``ContactID`` / ``AccountID`` / ``TaxType`` / ``TrackingCategoryID`` (id), account
``Code`` and ``TaxType`` (code), ``Name``, ``ContactStatus`` / ``Status`` (``ARCHIVED`` or
``DELETED`` → inactive), ``UpdatedDateUTC`` (``/Date(<ms>+0000)/``) as ``updated_at``.
``If-Modified-Since`` is sent as ISO 8601 UTC with milliseconds (Xero accepts both that and an
HTTP-date); records changed at exactly that time come back again and are skipped by the cursor.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.connectors.xero.connector import XeroConnector
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["XeroReader", "parse_xero_date"]

MAX_PAGE_SIZE = 1000
"""Xero's ceiling on ``pageSize``."""

_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")

_PLURAL = {
    "Contact": "Contacts",
    "Account": "Accounts",
    "TaxRate": "TaxRates",
    "TrackingCategory": "TrackingCategories",
}
_ID = {"Contact": "ContactID", "Account": "AccountID", "TaxRate": "TaxType", "TrackingCategory": "TrackingCategoryID"}


def parse_xero_date(value: str) -> datetime:
    """``/Date(1574275974000+0000)/`` (Xero's JSON dates) or ISO 8601 → aware UTC datetime.

    Raises:
        ValueError: neither form.
    """
    match = _MS_DATE.match(value)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)
    return utc(datetime.fromisoformat(value))


def if_modified_since(since: datetime) -> str:
    """The ``If-Modified-Since`` value for ``since``: ISO 8601 UTC with milliseconds, no offset."""
    return utc(since).replace(tzinfo=None).isoformat(timespec="milliseconds")


class XeroReader(ReferenceReader):
    """Reads suppliers, customers, accounts, tax rates and tracking categories of one Xero organisation."""

    erp: ClassVar[str] = "xero"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "Contact"),
        ReferenceSource("customer", "Contact"),
        ReferenceSource("gl_account", "Account"),
        ReferenceSource("tax_rate", "TaxRate", incremental=False),
        ReferenceSource("tracking", "TrackingCategory", incremental=False),
    )

    def __init__(self, connector: XeroConnector, *, page_size: int = 100) -> None:
        super().__init__(connector, page_size=page_size)
        self.xero = connector

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """One page of ``source`` (see the module docstring).

        Raises:
            RetriableError, PermanentError: as the connector's client raises them.
            InvalidResponse: the answer does not carry the entity's list.
        """
        plural = _PLURAL[source.entity]
        params: dict[str, str | int] = {}
        headers: dict[str, str] = {}
        paged = source.entity == "Contact"
        if source.incremental:
            params["order"] = "UpdatedDateUTC ASC"
            if since is not None:
                headers["If-Modified-Since"] = if_modified_since(since)
        if paged:
            flag = "IsSupplier" if source.kind == "vendor" else "IsCustomer"
            params.update({"where": f"{flag}==true", "includeArchived": "true", "page": 1})
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
        records = [self._record(source, raw) for raw in found]
        complete = not paged or len(found) < min(limit, MAX_PAGE_SIZE)
        return ReferencePage(records, complete=complete)

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
