"""QuickBooks Online reader: reference data by ``query`` on ``MetaData.LastUpdatedTime``.

``GET /v3/company/{realmId}/query?query=select * from <Entity> where MetaData.LastUpdatedTime >= '<since>'
orderby MetaData.LastUpdatedTime startposition 1 maxresults <n>`` (Intuit query language, entity
pages for Vendor, Customer, Account, TaxCode, TaxRate, Class, Department; ``shared/reference/erp_apis.md`` §1),
through the connector's authenticated client (same token, 500/min and 10-concurrent limits as its
writes). Paging is keyset paging on the change time (:mod:`ledgerflow.connectors.reference`).

=============  ===========  =========================================================================
kind           entity       fields
=============  ===========  =========================================================================
vendor         Vendor       ``Id``, ``DisplayName``, ``Active``
customer       Customer     ``Id``, ``DisplayName``, ``Active``
gl_account     Account      ``Id``, ``AcctNum`` (code), ``Name``, ``Active``
tax_rate       TaxCode      ``Id``, ``Name`` (also the code), ``Active``
tax_rate       TaxRate      ``Id``, ``Name``, ``Active``
tracking       Class        ``Id``, ``Name``, ``Active``, ``ParentRef``
tracking       Department   ``Id``, ``Name``, ``Active``, ``ParentRef``
=============  ===========  =========================================================================

``updated_at`` is ``MetaData.LastUpdatedTime`` (ISO 8601 with offset, converted to UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.quickbooks.connector import QuickBooksConnector
from ledgerflow.connectors.quickbooks.errors import fault_of
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["QuickBooksReader"]

MAX_RESULTS = 1000
"""Intuit's ceiling on ``MAXRESULTS``."""


class QuickBooksReader(ReferenceReader):
    """Reads vendors, customers, accounts, tax codes and rates, classes and departments of one realm."""

    erp: ClassVar[str] = "quickbooks"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "Vendor"),
        ReferenceSource("customer", "Customer"),
        ReferenceSource("gl_account", "Account"),
        ReferenceSource("tax_rate", "TaxCode"),
        ReferenceSource("tax_rate", "TaxRate"),
        ReferenceSource("tracking", "Class"),
        ReferenceSource("tracking", "Department"),
    )

    def __init__(self, connector: QuickBooksConnector, *, page_size: int = 100) -> None:
        super().__init__(connector, page_size=page_size)
        self.quickbooks = connector

    @staticmethod
    def query(entity: str, since: datetime | None, limit: int) -> str:
        """The Intuit query for ``limit`` records of ``entity`` changed at or after ``since``, oldest first."""
        where = ""
        if since is not None:
            stamp = utc(since).isoformat(timespec="seconds")
            where = f" where MetaData.LastUpdatedTime >= '{stamp}'"
        # entity is one of this module's constants; the stamp is formatted here, not user text.
        return (
            f"select * from {entity}{where} orderby MetaData.LastUpdatedTime"  # noqa: S608
            f" startposition 1 maxresults {min(limit, MAX_RESULTS)}"
        )

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """One page of ``source`` (see the module docstring).

        Raises:
            RetriableError, PermanentError: as the connector's client raises them (also a 200 ``Fault``).
            InvalidResponse: the answer is not a ``QueryResponse``.
        """
        client = self.quickbooks.client()
        response = await client.request(
            "GET",
            "/query",
            operation=f"{source.entity.lower()}.query",
            params={"query": self.query(source.entity, since, limit), "minorversion": self.quickbooks.MINOR_VERSION},
        )
        body = loads_json(response.content) if response.content else {}
        if fault_of(body) is not None:
            raise client.error_for(response)
        if not isinstance(body, dict) or not isinstance(body.get("QueryResponse"), dict):
            raise InvalidResponse(f"QuickBooks query of {source.entity}: no QueryResponse in the answer")
        found = body["QueryResponse"].get(source.entity) or []
        records = [self._record(source, raw) for raw in found]
        return ReferencePage(records, complete=len(found) < min(limit, MAX_RESULTS))

    def _record(self, source: ReferenceSource, raw: dict[str, Any]) -> ReferenceRecord:
        stamp = (raw.get("MetaData") or {}).get("LastUpdatedTime")
        updated = utc(datetime.fromisoformat(stamp)) if stamp else None
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
            updated_at=updated,
            parent_id=str(parent["value"]) if isinstance(parent, dict) and parent.get("value") else None,
            erp_record=raw,
        )
