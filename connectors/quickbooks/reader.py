"""QuickBooks Online reader: reference data, projects and payments by ``query`` and change data capture.

First read of a source (no cursor), and any read whose change data capture would start
:data:`CDC_WINDOW` ago or more:
``GET /v3/company/{realmId}/query?query=select * from <Entity> where MetaData.LastUpdatedTime >= '<since>'
orderby MetaData.LastUpdatedTime startposition 1 maxresults <n>`` (Intuit query language;
``shared/reference/erp_apis.md`` §1). Later reads of the entities change data capture covers
(:data:`CDC_ENTITIES`): ``GET /v3/company/{realmId}/cdc?entities=<Entity>&changedSince=<start − 1 s>``
(Intuit ChangeDataCapture: at most 30 days back, at most 1000 objects per entity, deleted objects
as ``{"Id", "status": "Deleted", "MetaData": {"LastUpdatedTime"}}``). The start is the cursor's
``since``, or, when later, the start of the last pass that read the source to its end less
:data:`CDC_CLOCK_MARGIN` (:meth:`QuickBooksReader.cdc_start`; the cursor's ``checked``): an entity
that has not changed for months but is read every pass stays on change data capture. The answer is sorted by change
time and cut to the page like a query, so the keyset paging of
:mod:`ledgerflow.connectors.reference` (``since`` + ``seen``) holds for both; ``changedSince`` is
one second early (QuickBooks stamps to the second) and what the cursor covers is skipped. An
answer at the 1000-object cap may leave changes out: that read falls back to the query.
Everything goes through the connector's authenticated client (same token, 500/min and
10-concurrent limits as its writes).

=============  ===========  =========================================================================
kind           entity       fields
=============  ===========  =========================================================================
vendor         Vendor       ``Id``, ``DisplayName``, ``Active``
customer       Customer     ``Id``, ``DisplayName``, ``Active`` (``where Job = false``: not projects)
project        Customer     ``Id``, ``DisplayName``, ``Active``, ``ParentRef`` (the customer) —
                            QuickBooks projects and sub-customers are customers with ``Job = true``
gl_account     Account      ``Id``, ``AcctNum`` (code), ``Name``, ``Active``
tax_rate       TaxCode      ``Id``, ``Name`` (also the code), ``Active``
tax_rate       TaxRate      ``Id``, ``Name``, ``Active``
tracking       Class        ``Id``, ``Name``, ``Active``, ``ParentRef``
tracking       Department   ``Id``, ``Name``, ``Active``, ``ParentRef``
payment        BillPayment  ``Id``, ``DocNumber`` (code), ``VendorRef.name`` (name), ``TotalAmt`` (amount),
                            ``CurrencyRef.value`` (currency), ``TxnDate`` (paid_on),
                            ``Line[].Amount`` + ``Line[].LinkedTxn[{TxnId, TxnType: Bill}]`` (applied_to)
payment        Payment      same with ``CustomerRef.name`` and ``LinkedTxn`` ``TxnType: Invoice``
=============  ===========  =========================================================================

``updated_at`` is ``MetaData.LastUpdatedTime`` (ISO 8601 with offset, converted to UTC). Amounts
are read from the JSON as ``Decimal`` (never through float). A deleted object (change data capture
only; the query does not return them) is published inactive with its id and change time, no other
field; a deleted ``Customer`` carries no ``Job`` flag and is published as a ``customer``. Each
payment line links one transaction (Intuit's BillPayment and Payment pages); its ``Amount`` is
what the payment applies to it. ``applied_to`` entries name the source document (tenant, source,
source id, object type ``bill`` for a Bill, ``invoice`` for an Invoice) when ledgerflow booked it:
one binder look-up per page (:func:`ledgerflow.connectors.binder.documents_of_erp_records`);
documents ledgerflow did not book keep those fields None. A payment without ``CurrencyRef`` has
``currency`` None (no home-currency guess).

Payments ledgerflow booked itself (a source's payment written by the connector: binder key of
object type ``payment`` on the payment's own id) are published like any other; a writer that must
not send a payment back to the source it came from recognises them with
``documents_of_erp_records(state, record.connection, [record.erp_id])`` holding ``(erp_id, "payment")``.

Assumptions (not in ``shared/reference``): ``Job`` is filterable in a Customer query (``where
Job = true``); TaxCode and TaxRate are not change data capture entities and stay on the query.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.binder import BinderKey, documents_of_erp_records
from ledgerflow.connectors.quickbooks.connector import QuickBooksConnector
from ledgerflow.connectors.quickbooks.errors import fault_of
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["CDC_ENTITIES", "CDC_WINDOW", "QuickBooksReader"]

log = logging.getLogger(__name__)

MAX_RESULTS = 1000
"""Intuit's ceiling on ``MAXRESULTS``."""

CDC_MAX_OBJECTS = 1000
"""Objects per entity in one change data capture answer (Intuit's cap)."""

CDC_WINDOW = timedelta(days=30) - timedelta(hours=1)
"""Cursors younger than this read by change data capture (Intuit allows 30 days; an hour of margin)."""

CDC_CLOCK_MARGIN = timedelta(minutes=10)
"""How far the realm's clock may be behind ours: change data capture from a pass's start goes back this much."""

CDC_ENTITIES = frozenset({"Vendor", "Customer", "Account", "Class", "Department", "BillPayment", "Payment"})
"""Entities of this reader that Intuit's ChangeDataCapture covers."""

_PAID = {"BillPayment": ("Bill", "bill", "VendorRef"), "Payment": ("Invoice", "invoice", "CustomerRef")}
"""Payment entity → (paid entity, canonical object type ledgerflow books it from, payee reference)."""


class QuickBooksReader(ReferenceReader):
    """Reads parties, projects, accounts, tax codes and rates, classes, departments and payments of one realm.

    Args:
        connector: the realm's connector.
        page_size: records per page.
        cdc: read incremental passes by change data capture when the cursor allows (default);
            False: always by query (deletions are then not seen).
    """

    erp: ClassVar[str] = "quickbooks"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "Vendor"),
        ReferenceSource("customer", "Customer"),
        ReferenceSource("project", "Customer"),
        ReferenceSource("gl_account", "Account"),
        ReferenceSource("tax_rate", "TaxCode"),
        ReferenceSource("tax_rate", "TaxRate"),
        ReferenceSource("tracking", "Class"),
        ReferenceSource("tracking", "Department"),
        ReferenceSource("payment", "BillPayment"),
        ReferenceSource("payment", "Payment"),
    )

    def __init__(self, connector: QuickBooksConnector, *, page_size: int = 100, cdc: bool = True) -> None:
        super().__init__(connector, page_size=page_size)
        self.quickbooks = connector
        self.cdc = cdc
        self._checked: dict[ReferenceSource, datetime | None] = {}

    def resume(self, source: ReferenceSource, checked: datetime | None) -> None:
        """Remember when the last complete pass over ``source`` started (see :meth:`cdc_start`)."""
        self._checked[source] = checked

    def cdc_start(self, source: ReferenceSource, since: datetime) -> datetime:
        """Where change data capture of ``source`` must start to miss nothing after ``since``.

        ``since`` (the newest change published), or, when a pass read the source to its end
        since then, that pass's start less :data:`CDC_CLOCK_MARGIN`: nothing changed in between
        that the pass did not publish. A quiet entity (newest change months old) read every 15
        minutes thus stays within Intuit's 30 days, and its deletions are seen.
        """
        start = utc(since)
        checked = self._checked.get(source)
        if checked is not None:
            start = max(start, utc(checked) - CDC_CLOCK_MARGIN)
        return start

    @staticmethod
    def query(source: ReferenceSource, since: datetime | None, limit: int) -> str:
        """The Intuit query for ``limit`` records of ``source`` changed at or after ``since``, oldest first."""
        conditions = []
        if source.entity == "Customer":
            conditions.append(f"Job = {'true' if source.kind == 'project' else 'false'}")
        if since is not None:
            stamp = utc(since).isoformat(timespec="seconds")
            conditions.append(f"MetaData.LastUpdatedTime >= '{stamp}'")
        where = f" where {' and '.join(conditions)}" if conditions else ""
        # entity is one of this module's constants; the stamp is formatted here, not user text.
        return (
            f"select * from {source.entity}{where} orderby MetaData.LastUpdatedTime"  # noqa: S608
            f" startposition 1 maxresults {min(limit, MAX_RESULTS)}"
        )

    def uses_cdc(self, source: ReferenceSource, since: datetime | None, now: datetime | None = None) -> bool:
        """Whether a read of ``source`` from ``since`` goes through change data capture."""
        if not self.cdc or since is None or source.entity not in CDC_ENTITIES:
            return False
        return (now or datetime.now(UTC)) - self.cdc_start(source, since) < CDC_WINDOW

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """One page of ``source`` (see the module docstring).

        Raises:
            RetriableError, PermanentError: as the connector's client raises them (also a 200 ``Fault``).
            InvalidResponse: the answer is not a ``QueryResponse`` / ``CDCResponse``, or a payment
                line links several transactions.
        """
        found: list[dict[str, Any]] | None = None
        complete = False
        if since is not None and self.uses_cdc(source, since):
            changed = await self._changes(source, self.cdc_start(source, since))
            if changed is not None:
                found = changed[:limit]
                complete = len(changed) <= limit
        if found is None:
            found = await self._query(source, since, limit)
            complete = len(found) < min(limit, MAX_RESULTS)
        if source.kind == "payment":
            bound = await self._bound_documents(source, found)
            records = [self._payment(source, raw, bound) for raw in found]
        else:
            records = [self._record(source, raw) for raw in found]
        return ReferencePage(records, complete=complete)

    async def _query(self, source: ReferenceSource, since: datetime | None, limit: int) -> list[dict[str, Any]]:
        client = self.quickbooks.client()
        response = await client.request(
            "GET",
            "/query",
            operation=f"{source.entity.lower()}.query",
            params={"query": self.query(source, since, limit), "minorversion": self.quickbooks.MINOR_VERSION},
        )
        body = loads_json(response.content) if response.content else {}
        if fault_of(body) is not None:
            raise client.error_for(response)
        if not isinstance(body, dict) or not isinstance(body.get("QueryResponse"), dict):
            raise InvalidResponse(f"QuickBooks query of {source.entity}: no QueryResponse in the answer")
        found = body["QueryResponse"].get(source.entity) or []
        if not isinstance(found, list):
            raise InvalidResponse(f"QuickBooks query of {source.entity}: {source.entity} is not a list")
        return found

    async def _changes(self, source: ReferenceSource, since: datetime) -> list[dict[str, Any]] | None:
        """Objects of ``source`` changed at or after ``since`` (:meth:`cdc_start`) by change data capture, oldest first.

        None when the answer holds :data:`CDC_MAX_OBJECTS` (changes may be missing: query instead).
        """
        client = self.quickbooks.client()
        changed_since = (utc(since) - timedelta(seconds=1)).isoformat(timespec="seconds")
        response = await client.request(
            "GET",
            "/cdc",
            operation=f"{source.entity.lower()}.cdc",
            params={
                "entities": source.entity,
                "changedSince": changed_since,
                "minorversion": self.quickbooks.MINOR_VERSION,
            },
        )
        body = loads_json(response.content) if response.content else {}
        if fault_of(body) is not None:
            raise client.error_for(response)
        found: list[dict[str, Any]] = []
        try:
            for answer in body["CDCResponse"][0]["QueryResponse"]:
                objects = answer.get(source.entity) or []
                if not isinstance(objects, list):
                    raise TypeError(f"{source.entity} is not a list")
                found.extend(objects)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise InvalidResponse(
                f"QuickBooks change data capture of {source.entity}: unexpected answer ({exc})"
            ) from exc
        if len(found) >= CDC_MAX_OBJECTS:
            log.info("QuickBooks CDC of %s answered %d objects (the cap): reading by query", source.entity, len(found))
            return None
        wanted = [raw for raw in found if self._belongs(source, raw)]
        wanted.sort(key=lambda raw: (_updated(raw) or datetime.min.replace(tzinfo=UTC), str(raw.get("Id"))))
        return wanted

    @staticmethod
    def _belongs(source: ReferenceSource, raw: dict[str, Any]) -> bool:
        """Whether a change data capture object of ``source.entity`` is of ``source.kind`` (customers vs projects)."""
        if source.entity != "Customer":
            return True
        if _deleted(raw):
            return source.kind == "customer"
        return (raw.get("Job") is True) == (source.kind == "project")

    async def _bound_documents(
        self, source: ReferenceSource, payments: list[dict[str, Any]]
    ) -> dict[tuple[str, str], BinderKey]:
        ids = {txn_id for raw in payments for _, txn_id, _ in _links(source, raw)}
        if not ids:
            return {}
        return await documents_of_erp_records(self.quickbooks.state, self.connection, ids)

    def _payment(
        self, source: ReferenceSource, raw: dict[str, Any], bound: dict[tuple[str, str], BinderKey]
    ) -> ReferenceRecord:
        paid_entity, object_type, party = _PAID[source.entity]
        if _deleted(raw):
            return self._tombstone(source, raw)
        applied = []
        for txn_type, txn_id, amount in _links(source, raw):
            ours = bound.get((txn_id, object_type)) if txn_type == paid_entity else None
            applied.append(
                AppliedDocument(
                    entity=txn_type,
                    erp_id=txn_id,
                    amount=amount,
                    object_type=ours.object_type if ours else None,
                    tenant=ours.tenant if ours else None,
                    source=ours.source if ours else None,
                    source_id=ours.source_id if ours else None,
                )
            )
        payee = _object(raw.get(party))
        currency = _object(raw.get("CurrencyRef"))
        total = raw.get("TotalAmt")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(raw["Id"]),
            code=str(raw["DocNumber"]) if raw.get("DocNumber") else None,
            name=str(payee.get("name") or ""),
            active=True,
            updated_at=_updated(raw),
            amount=_decimal(total) if total is not None else None,
            currency=str(currency["value"]) if currency.get("value") else None,
            paid_on=date.fromisoformat(str(raw["TxnDate"])) if raw.get("TxnDate") else None,
            applied_to=applied,
            erp_record=raw,
        )

    def _tombstone(self, source: ReferenceSource, raw: dict[str, Any]) -> ReferenceRecord:
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(raw["Id"]),
            name="",
            active=False,
            updated_at=_updated(raw),
            erp_record=raw,
        )

    def _record(self, source: ReferenceSource, raw: dict[str, Any]) -> ReferenceRecord:
        if _deleted(raw):
            return self._tombstone(source, raw)
        name = raw.get("DisplayName") or raw.get("FullyQualifiedName") or raw.get("Name") or ""
        code = (
            raw.get("AcctNum")
            if source.entity == "Account"
            else (raw.get("Name") if source.entity == "TaxCode" else None)
        )
        parent = raw.get("ParentRef")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(raw["Id"]),
            code=str(code) if code else None,
            name=str(name),
            active=raw.get("Active") is not False,
            updated_at=_updated(raw),
            parent_id=str(parent["value"]) if isinstance(parent, dict) and parent.get("value") else None,
            erp_record=raw,
        )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _deleted(raw: dict[str, Any]) -> bool:
    return str(raw.get("status", "")).lower() == "deleted"


def _updated(raw: dict[str, Any]) -> datetime | None:
    stamp = (raw.get("MetaData") or {}).get("LastUpdatedTime")
    return utc(datetime.fromisoformat(str(stamp))) if stamp else None


def _decimal(value: Any) -> Decimal:
    """A QuickBooks amount as ``Decimal``: JSON numbers arrive as Decimal or int (:func:`loads_json`), never float."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidResponse(f"QuickBooks amount {value!r} is not a number")
    return Decimal(str(value))


def _links(source: ReferenceSource, raw: dict[str, Any]) -> list[tuple[str, str, Decimal]]:
    """``(TxnType, TxnId, Line.Amount)`` of each payment line of ``raw`` (one linked transaction per line).

    Raises:
        InvalidResponse: a line links several transactions (the line amount cannot be split).
    """
    links: list[tuple[str, str, Decimal]] = []
    for line in raw.get("Line") or []:
        linked = line.get("LinkedTxn") if isinstance(line, dict) else None
        if not linked:
            continue
        if not isinstance(linked, list) or len(linked) != 1 or not isinstance(linked[0], dict):
            count = len(linked) if isinstance(linked, list) else 0
            raise InvalidResponse(
                f"QuickBooks {source.entity} {raw.get('Id')}: a line links {count} transactions; one was expected"
            )
        links.append((str(linked[0].get("TxnType", "")), str(linked[0].get("TxnId", "")), _decimal(line.get("Amount"))))
    return links
