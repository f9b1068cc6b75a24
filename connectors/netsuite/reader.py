"""NetSuite reader: reference data by SuiteQL on ``lastmodifieddate`` (REST query service).

``POST /services/rest/query/v1/suiteql?limit=<n>&offset=0`` with ``Prefer: transient`` and
``{"q": "SELECT … FROM <table> WHERE lastmodifieddate >= TO_TIMESTAMP('<since>',
'YYYY-MM-DD HH24:MI:SS') ORDER BY lastmodifieddate, id"}`` (Oracle help "Executing SuiteQL
Queries Through REST Web Services", section_157909186990, and "Using SuiteQL with SuiteTalk REST
Web Services", section_158394344595: the query in body parameter ``q``, ``limit`` ≤ 1000 and
``offset`` in the URL, ``Prefer: transient``; a unique sort order "to avoid duplicate or missing
results"), through the connector's authenticated client (TBA or OAuth 2.0, the account-wide
concurrency cap shared with its writes; ``shared/reference/erp_apis.md`` §3.3). Paging is keyset
paging on the change time (:mod:`ledgerflow.connectors.reference`): every page starts at offset 0
from the cursor, ties in ``lastmodifieddate`` ordered by ``id``.

=============  ===============  =================================================================
kind           table (entity)   columns → ReferenceRecord
=============  ===============  =================================================================
vendor         vendor           ``id`` → erp_id, ``entityid`` → code, ``companyname`` (else
                                ``entityid``) → name, ``isinactive`` ``T`` → inactive
customer       customer         same as vendor
gl_account     account          ``id``, ``acctnumber`` → code, ``acctname`` → name,
                                ``isinactive``, ``parent`` → parent_id
tax_rate       salestaxitem     ``id``, ``description`` → name, ``rate``, ``taxtype``,
                                ``isinactive`` (snapshot: no ``lastModifiedDate`` in the record)
tracking       department       ``id``, ``name``, ``isinactive``, ``parent`` → parent_id
tracking       classification   same (NetSuite's "class" segment)
tracking       location         same
project        job              ``id``, ``entityid`` → code, ``companyname`` → name,
                                ``isinactive``, ``parent`` (the customer) → parent_id
payment        transaction      ``type = 'VendPymt'`` (entity ``vendorPayment``): ``id``,
               (vendorPayment)  ``tranid`` → code and name, ``trandate`` → paid_on,
                                ``foreigntotal`` (absolute value) → amount, ``currency`` →
                                ``currency.symbol`` → currency; applied_to from
                                ``previoustransactionlinelink`` (``linktype = 'Payment'``,
                                ``nextdoc`` the payment): ``previousdoc`` (the ``vendorBill``)
                                → erp_id, ``foreignamount`` → amount, the source document from
                                the binder when ledgerflow booked the bill
=============  ===============  =================================================================

``updated_at`` is ``TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS')`` (selected as
``lastmodified``: a bare ``lastmodifieddate`` comes back as a date in the user's date format,
without the time), whole seconds.

Assumptions where ``shared/reference`` is silent (it documents the record service only):

* SuiteQL column names are the record service's field names lower-cased (``companyName`` →
  ``companyname``), as in the NetSuite2.com data source; the sandbox checks them against the
  captured OpenAPI description (``specs/netsuite-oas.json``) where it has the record.
* The captured description has no ``lastModifiedDate`` on ``salesTaxItem`` and no name field but
  ``description``: sales tax items are a snapshot source (read whole, diffed by content hash),
  with ``description`` as the name and no code.
* SuiteQL compares and formats timestamps in the integration user's time zone: the connection
  option ``time_zone`` (IANA name) says which; unset means UTC.
* Payments: the ``transaction`` columns and the ``previoustransactionlinelink`` table (one row
  per bill a payment applies to, ``foreignamount`` in the payment's currency) as the
  NetSuite2.com data source names them; ``foreigntotal`` may carry the posting's sign, so its
  absolute value is the amount.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.binder import BinderKey, documents_of_erp_records
from ledgerflow.connectors.netsuite.connector import NetSuiteConnector
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["SUITEQL_PATH", "NetSuiteReader", "suiteql"]

SUITEQL_PATH = "/services/rest/query/v1/suiteql"
"""The REST query service's SuiteQL resource (beside ``/services/rest/record/v1``)."""

MAX_LIMIT = 1000
"""NetSuite's ceiling on ``limit`` of a SuiteQL page."""

_STAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS"
_DATE_FORMAT = "YYYY-MM-DD"
_TABLES = {"vendorPayment": "transaction"}
_CONDITIONS = {"vendorPayment": "type = 'VendPymt'"}
_CHANGED = f"TO_CHAR(lastmodifieddate, '{_STAMP_FORMAT}') AS lastmodified"

_COLUMNS: dict[str, tuple[str, ...]] = {
    "vendor": ("id", "entityid", "companyname", "isinactive"),
    "customer": ("id", "entityid", "companyname", "isinactive"),
    "account": ("id", "acctnumber", "acctname", "isinactive", "parent"),
    "salestaxitem": ("id", "description", "rate", "taxtype", "isinactive"),
    "department": ("id", "name", "isinactive", "parent"),
    "classification": ("id", "name", "isinactive", "parent"),
    "location": ("id", "name", "isinactive", "parent"),
    "job": ("id", "entityid", "companyname", "isinactive", "parent"),
    "transaction": (
        "id",
        "tranid",
        f"TO_CHAR(trandate, '{_DATE_FORMAT}') AS trandate",
        "entity",
        "currency",
        "foreigntotal",
    ),
}
"""Columns read per table (the change time is added for incremental sources)."""


def suiteql(table: str, since: datetime | None, *, incremental: bool, time_zone: ZoneInfo | None = None) -> str:
    """The SuiteQL query of source ``table``: records changed at or after ``since`` (all when None), oldest first.

    ``since`` is written in ``time_zone`` (the integration user's; UTC when None). Snapshot
    tables (``incremental`` False) are read whole, ordered by ``id``. ``vendorPayment`` is the
    ``transaction`` table with ``type = 'VendPymt'``.
    """
    name = _TABLES.get(table, table)
    columns = ", ".join(_COLUMNS[name] + ((_CHANGED,) if incremental else ()))
    if not incremental:
        return f"SELECT {columns} FROM {name} ORDER BY id"  # noqa: S608 - constants of this module
    terms = [_CONDITIONS[table]] if table in _CONDITIONS else []
    if since is not None:
        local = utc(since).astimezone(time_zone or UTC)
        stamp = local.strftime("%Y-%m-%d %H:%M:%S")
        terms.append(f"lastmodifieddate >= TO_TIMESTAMP('{stamp}', '{_STAMP_FORMAT}')")
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    # table and columns are this module's constants; the stamp is formatted here, not user text.
    return f"SELECT {columns} FROM {name}{where} ORDER BY lastmodifieddate, id"  # noqa: S608


class NetSuiteReader(ReferenceReader):
    """Reads vendors, customers, accounts, sales tax items, departments, classes, locations and projects."""

    erp: ClassVar[str] = "netsuite"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "vendor"),
        ReferenceSource("customer", "customer"),
        ReferenceSource("gl_account", "account"),
        ReferenceSource("tax_rate", "salestaxitem", incremental=False),
        ReferenceSource("tracking", "department"),
        ReferenceSource("tracking", "classification"),
        ReferenceSource("tracking", "location"),
        ReferenceSource("project", "job"),
        ReferenceSource("payment", "vendorPayment"),
    )

    def __init__(self, connector: NetSuiteConnector, *, page_size: int = 100) -> None:
        super().__init__(connector, page_size=page_size)
        self.netsuite = connector
        zone = connector.config.options.get("time_zone")
        self.time_zone = ZoneInfo(str(zone)) if zone else None
        self._currencies: dict[str, str] | None = None

    async def _query(self, query: str, operation: str, wanted: int | None) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``wanted`` rows of ``query`` (all when None) in pages of at most 1000; (rows, complete)."""
        client = self.netsuite.client
        url = client.base_url.removesuffix("/services/rest/record/v1") + SUITEQL_PATH
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            size = MAX_LIMIT if wanted is None else min(wanted - len(rows), MAX_LIMIT)
            if size < MAX_LIMIT and offset:
                size = MAX_LIMIT  # offsets must be multiples of the limit; the surplus is cut below
            response = await client.request(
                "POST",
                url,
                operation=operation,
                params={"limit": size, "offset": offset},
                json_body={"q": query},
                headers={"Prefer": "transient"},
            )
            body = loads_json(response.content) if response.content else None
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise InvalidResponse(f"NetSuite SuiteQL ({operation}): the answer carries no items list")
            rows.extend(item for item in body["items"] if isinstance(item, dict))
            more = bool(body.get("hasMore"))
            if not more or (wanted is not None and len(rows) >= wanted):
                break
            offset += size
        complete = not more
        if wanted is not None and len(rows) > wanted:
            rows, complete = rows[:wanted], False
        return rows, complete

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """One page of ``source`` (see the module docstring); more than 1000 rows in pages of 1000.

        Raises:
            RetriableError, PermanentError: as the connector's client raises them (a refused query
                is ``INVALID_PARAMETER``, permanent).
            InvalidResponse: the answer is not a SuiteQL collection.
        """
        query = suiteql(source.entity, since, incremental=source.incremental, time_zone=self.time_zone)
        wanted = limit if source.incremental else None
        rows, complete = await self._query(query, f"{source.entity}.suiteql", wanted)
        if source.kind == "payment":
            return ReferencePage(await self._payments(source, rows), complete=complete)
        return ReferencePage([self._record(source, row) for row in rows], complete=complete)

    async def _payments(self, source: ReferenceSource, rows: list[dict[str, Any]]) -> list[ReferenceRecord]:
        """Payment records of ``rows`` with their applied bills (one link query, one binder look-up)."""
        if not rows:
            return []
        if self._currencies is None:
            found, _ = await self._query("SELECT id, symbol FROM currency ORDER BY id", "currency.suiteql", None)
            self._currencies = {str(row["id"]): str(row["symbol"]) for row in found if row.get("symbol")}
        ids = ", ".join(str(int(row["id"])) for row in rows)
        links, _ = await self._query(
            "SELECT previousdoc, nextdoc, foreignamount FROM previoustransactionlinelink"  # noqa: S608 - ids are ints
            f" WHERE linktype = 'Payment' AND nextdoc IN ({ids}) ORDER BY nextdoc, previousdoc",
            "vendorPayment.links.suiteql",
            None,
        )
        bound: dict[tuple[str, str], BinderKey] = {}
        bills = {str(link["previousdoc"]) for link in links if link.get("previousdoc")}
        if bills:
            bound = await documents_of_erp_records(self.netsuite.state, self.connection, bills)
        applied: dict[str, list[AppliedDocument]] = {}
        for link in links:
            bill = str(link.get("previousdoc") or "")
            ours = bound.get((bill, "bill"))
            applied.setdefault(str(link.get("nextdoc")), []).append(
                AppliedDocument(
                    entity="vendorBill",
                    erp_id=bill,
                    amount=_money(link.get("foreignamount"), f"payment link to bill {bill}"),
                    object_type=ours.object_type if ours else None,
                    tenant=ours.tenant if ours else None,
                    source=ours.source if ours else None,
                    source_id=ours.source_id if ours else None,
                )
            )
        return [self._payment(source, row, applied.get(str(row["id"]), [])) for row in rows]

    def _payment(self, source: ReferenceSource, row: dict[str, Any], applied: list[AppliedDocument]) -> ReferenceRecord:
        currency = row.get("currency")
        code = (self._currencies or {}).get(str(currency)) if currency is not None else None
        if currency is not None and code is None:
            raise InvalidResponse(f"NetSuite vendorPayment {row.get('id')}: currency {currency} is not in the account")
        total = row.get("foreigntotal")
        paid_on = row.get("trandate")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(row["id"]),
            code=str(row["tranid"]) if row.get("tranid") else None,
            name=str(row.get("tranid") or row["id"]),
            active=True,
            updated_at=self._updated(source, row),
            amount=_money(total, f"vendorPayment {row['id']}").copy_abs() if total is not None else None,
            currency=code,
            paid_on=date.fromisoformat(str(paid_on)) if paid_on else None,
            applied_to=applied,
            erp_record={key: value for key, value in row.items() if key != "links"},
        )

    def _updated(self, source: ReferenceSource, row: dict[str, Any]) -> datetime | None:
        stamp = row.get("lastmodified")
        if not source.incremental or not stamp:
            return None
        local = datetime.strptime(str(stamp), "%Y-%m-%d %H:%M:%S").replace(tzinfo=self.time_zone or UTC)
        return utc(local)

    def _record(self, source: ReferenceSource, row: dict[str, Any]) -> ReferenceRecord:
        erp_record = {key: value for key, value in row.items() if key != "links"}
        updated = self._updated(source, row)
        code = row.get("acctnumber") if source.entity == "account" else row.get("entityid")
        name = row.get("companyname") or row.get("acctname") or row.get("name") or row.get("description")
        parent = row.get("parent")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(row["id"]),
            code=str(code) if code else None,
            name=str(name or code or ""),
            active=str(row.get("isinactive") or "F").upper() != "T",
            updated_at=updated,
            parent_id=str(parent) if parent else None,
            erp_record=erp_record,
        )


def _money(value: Any, what: str) -> Decimal:
    """A SuiteQL amount (text) as Decimal.

    Raises:
        InvalidResponse: not a finite number (naming ``what``).
    """
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidResponse(f"NetSuite {what}: {value!r} is not an amount") from None
    if not amount.is_finite():
        raise InvalidResponse(f"NetSuite {what}: {value!r} is not an amount")
    return amount
