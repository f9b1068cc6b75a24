"""SAP S/4HANA reader: reference data by OData V2 queries on change dates.

``GET <service>/<entity set>?$filter=<change date ≥ cursor>&$orderby=<change date>,<key>&$top=<n>
&$skip=0&$format=json`` through the connector's authenticated client (communication user or OAuth,
the connection's limits; ``shared/reference/erp_apis.md`` §4), ``{"d": {"results": [...]}}``.
Paging is keyset paging on the change time (:mod:`ledgerflow.connectors.reference`): every page
starts at ``$skip=0`` from the cursor, ties ordered by the key.

==========  =====================================  =========================================================
kind        service / entity set                   fields → ReferenceRecord
==========  =====================================  =========================================================
vendor      API_BUSINESS_PARTNER /                 ``BusinessPartner`` → erp_id, ``Supplier`` → code,
            A_BusinessPartner (``Supplier ne ''``)  ``BusinessPartnerFullName`` → name,
                                                   ``BusinessPartnerIsBlocked`` / ``IsMarkedForArchiving``
                                                   → inactive, ``LastChangeDate`` + ``LastChangeTime``
                                                   → updated_at
customer    same (``Customer ne ''``)              same, ``Customer`` → code
gl_account  API_GLACCOUNTINCHARTOFACCOUNTS_SRV /    ``GLAccount`` → erp_id and code, ``to_Text``
            A_GLAccountInChartOfAccounts           ``GLAccountLongName`` (option ``language``) → name,
                                                   ``AccountIsMarkedForDeletion`` /
                                                   ``AccountIsBlockedForPosting`` → inactive,
                                                   ``LastChangeDateTime`` → updated_at
tracking    API_COSTCENTER_SRV / A_CostCenter      ``CostCenter`` → erp_id and code, ``to_Text``
                                                   ``CostCenterName`` → name, ``IsBlkdForPrimaryCostsPosting``
                                                   → inactive (snapshot: no change date)
tracking    API_ENTERPRISE_PROJECT_SRV;v=0002 /    ``ProjectElementUUID`` → erp_id, ``ProjectElement`` (the WBS
            A_EnterpriseProjectElement             element) → code, ``ProjectElementDescription`` → name,
                                                   ``ParentObjectUUID`` → parent_id, ``LastChangeDateTime``
project     same service / A_EnterpriseProject     ``ProjectUUID`` → erp_id, ``Project`` → code,
                                                   ``ProjectDescription`` → name, ``ProcessingStatus`` 42
                                                   (closed) → inactive, ``LastChangeDateTime``
==========  =====================================  =========================================================

A business partner never changed since its creation has no ``LastChangeDate`` (null), so each of
vendor and customer has two sources: partners changed at least once, by ``LastChangeDate`` /
``LastChangeTime`` (``(LastChangeDate gt datetime'<day>' or (LastChangeDate eq datetime'<day>' and
LastChangeTime ge time'<PThhHmmMssS>'))``), and partners never changed, by ``CreationDate`` /
``CreationTime`` with ``LastChangeDate eq null`` (cursor entity ``A_BusinessPartner:created``;
the records' entity is ``A_BusinessPartner`` either way). A partner's first change moves it from
the second source to the first, which publishes the new version.

Assumptions where ``shared/reference`` is silent (it documents the supplier invoice service and
names ``API_BUSINESS_PARTNER`` only): the properties of ``A_BusinessPartner`` are those of its EDMX
(SAP-samples ``cloud-cap-risk-management``); those of the G/L account, cost center and enterprise
project services follow SAP Business Accelerator Hub; change dates and times are UTC (S/4HANA
Cloud's system time zone). No tax codes: the reference names no OData service for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.connectors.sap.connector import SapConnector
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["SapReader", "change_filter", "parse_odata_date"]

SNAPSHOT_PAGE = 1000
"""``$top`` of each read of a snapshot entity set (read to the end)."""

CLOSED_PROJECT_STATUS = frozenset({"42"})
"""``ProcessingStatus`` values of a closed enterprise project or WBS element (inactive)."""

_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_TIME = re.compile(r"^PT(\d{1,2})H(\d{1,2})M(\d{1,2})(?:\.\d+)?S$")


def parse_odata_date(value: str) -> datetime:
    """``/Date(1705312800000)/`` or ``/Date(1705312800000+0000)/`` (OData V2 JSON) → aware UTC datetime.

    Raises:
        ValueError: not that form.
    """
    match = _DATE.match(value)
    if match is None:
        raise ValueError(f"not an OData V2 date: {value!r}")
    return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)


def _parse_time(value: str) -> timedelta:
    match = _TIME.match(value)
    if match is None:
        raise ValueError(f"not an OData V2 time: {value!r}")
    hours, minutes, seconds = (int(group) for group in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True, slots=True)
class _Set:
    path: str
    key: str
    stamp: tuple[str, ...]  # (DateTimeOffset) or (Date, Time)
    condition: str = ""
    expand: str = ""


_BP = "/sap/opu/odata/sap/API_BUSINESS_PARTNER/A_BusinessPartner"
_PROJECTS = "/sap/opu/odata/sap/API_ENTERPRISE_PROJECT_SRV;v=0002"
_CHANGED = ("LastChangeDate", "LastChangeTime")
_CREATED = ("CreationDate", "CreationTime")


def change_filter(stamp: tuple[str, ...], since: datetime) -> str:
    """The ``$filter`` term "changed at or after ``since``" on ``stamp``'s properties.

    One ``Edm.DateTimeOffset`` property: ``P ge datetimeoffset'…'``; a date and a time property
    (``Edm.DateTime`` day + ``Edm.Time``): later day, or same day and time at or after.
    """
    since = utc(since)
    if len(stamp) == 1:
        return f"{stamp[0]} ge datetimeoffset'{since.replace(tzinfo=None).isoformat()}Z'"
    day, time = stamp
    midnight = since.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None).isoformat()
    clock = f"PT{since.hour:02d}H{since.minute:02d}M{since.second:02d}S"
    return f"({day} gt datetime'{midnight}' or ({day} eq datetime'{midnight}' and {time} ge time'{clock}'))"


class SapReader(ReferenceReader):
    """Reads suppliers, customers, G/L accounts, cost centers, WBS elements and projects of one tenant."""

    erp: ClassVar[str] = "sap"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "A_BusinessPartner:created"),
        ReferenceSource("vendor", "A_BusinessPartner"),
        ReferenceSource("customer", "A_BusinessPartner:created"),
        ReferenceSource("customer", "A_BusinessPartner"),
        ReferenceSource("gl_account", "A_GLAccountInChartOfAccounts"),
        ReferenceSource("tracking", "A_CostCenter", incremental=False),
        ReferenceSource("tracking", "A_EnterpriseProjectElement"),
        ReferenceSource("project", "A_EnterpriseProject"),
    )

    def __init__(self, connector: SapConnector, *, page_size: int = 100) -> None:
        super().__init__(connector, page_size=page_size)
        self.sap = connector
        options = connector.config.options
        self.chart = str(options.get("chart_of_accounts") or "YCOA")
        self.language = str(options.get("language") or "EN")

    def _set(self, source: ReferenceSource) -> _Set:
        entity = source.entity
        if entity.startswith("A_BusinessPartner"):
            role = "Supplier" if source.kind == "vendor" else "Customer"
            if entity.endswith(":created"):
                return _Set(_BP, "BusinessPartner", _CREATED, f"{role} ne '' and LastChangeDate eq null")
            return _Set(_BP, "BusinessPartner", _CHANGED, f"{role} ne '' and LastChangeDate ne null")
        if entity == "A_GLAccountInChartOfAccounts":
            return _Set(
                "/sap/opu/odata/sap/API_GLACCOUNTINCHARTOFACCOUNTS_SRV/A_GLAccountInChartOfAccounts",
                "GLAccount",
                ("LastChangeDateTime",),
                f"ChartOfAccounts eq '{self.chart.replace(chr(39), chr(39) * 2)}'",
                "to_Text",
            )
        if entity == "A_CostCenter":
            return _Set("/sap/opu/odata/sap/API_COSTCENTER_SRV/A_CostCenter", "CostCenter", (), expand="to_Text")
        if entity == "A_EnterpriseProjectElement":
            return _Set(f"{_PROJECTS}/A_EnterpriseProjectElement", "ProjectElementUUID", ("LastChangeDateTime",))
        if entity == "A_EnterpriseProject":
            return _Set(f"{_PROJECTS}/A_EnterpriseProject", "ProjectUUID", ("LastChangeDateTime",))
        raise ValueError(f"unknown SAP reference source {entity!r}")

    def params(self, source: ReferenceSource, since: datetime | None, limit: int, skip: int = 0) -> dict[str, str]:
        """The system query options of one read of ``source`` (see the module docstring)."""
        spec = self._set(source)
        terms = [spec.condition] if spec.condition else []
        if source.incremental and since is not None:
            terms.append(change_filter(spec.stamp, since))
        params = {"$format": "json", "$top": str(limit), "$skip": str(skip)}
        if terms:
            params["$filter"] = " and ".join(terms)
        params["$orderby"] = ",".join((*spec.stamp, spec.key))
        if spec.expand:
            params["$expand"] = spec.expand
        return params

    async def _results(self, source: ReferenceSource, params: dict[str, str]) -> list[dict[str, Any]]:
        url = str(self.sap.config.base_url).rstrip("/") + self._set(source).path
        response = await self.sap.client.request(
            "GET", url, operation=f"{source.entity.split(':')[0]}.read", params=params
        )
        body = loads_json(response.content) if response.content else None
        data = body.get("d") if isinstance(body, dict) else None
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise InvalidResponse(f"SAP {source.entity}: the answer carries no d.results list")
        return [row for row in results if isinstance(row, dict)]

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """One page of ``source`` (snapshot sources: every record, read in pages of 1000).

        Raises:
            RetriableError, PermanentError: as the connector's client raises them (a refused
                ``$filter`` is a 400, permanent).
            InvalidResponse: the answer is not ``{"d": {"results": [...]}}`` or a change date is malformed.
        """
        if not source.incremental:
            rows: list[dict[str, Any]] = []
            while True:
                found = await self._results(source, self.params(source, None, SNAPSHOT_PAGE, len(rows)))
                rows.extend(found)
                if len(found) < SNAPSHOT_PAGE:
                    break
            return ReferencePage([self._record(source, row) for row in rows], complete=True)
        found = await self._results(source, self.params(source, since, limit))
        return ReferencePage([self._record(source, row) for row in found], complete=len(found) < limit)

    def _updated(self, source: ReferenceSource, row: dict[str, Any]) -> datetime | None:
        stamp = self._set(source).stamp
        if not source.incremental or not stamp:
            return None
        try:
            if len(stamp) == 1:
                return parse_odata_date(str(row[stamp[0]]))
            return parse_odata_date(str(row[stamp[0]])) + _parse_time(str(row[stamp[1]]))
        except (KeyError, ValueError) as exc:
            raise InvalidResponse(f"SAP {source.entity}: malformed change date in {row!r}: {exc}") from None

    def _text(self, row: dict[str, Any], *names: str) -> str | None:
        texts = (row.get("to_Text") or {}).get("results") or []
        chosen = next((t for t in texts if t.get("Language") == self.language), texts[0] if texts else None)
        if not isinstance(chosen, dict):
            return None
        return next((str(chosen[n]) for n in names if chosen.get(n)), None)

    def _record(self, source: ReferenceSource, row: dict[str, Any]) -> ReferenceRecord:
        entity = source.entity.split(":")[0]
        parent = None
        if entity == "A_BusinessPartner":
            erp_id, code = row.get("BusinessPartner"), row.get("Supplier" if source.kind == "vendor" else "Customer")
            name = row.get("BusinessPartnerFullName") or row.get("BusinessPartnerName")
            active = not (row.get("BusinessPartnerIsBlocked") or row.get("IsMarkedForArchiving"))
        elif entity == "A_GLAccountInChartOfAccounts":
            erp_id = code = row.get("GLAccount")
            name = self._text(row, "GLAccountLongName", "GLAccountName")
            active = not (row.get("AccountIsMarkedForDeletion") or row.get("AccountIsBlockedForPosting"))
        elif entity == "A_CostCenter":
            erp_id = code = row.get("CostCenter")
            name = self._text(row, "CostCenterName", "CostCenterDescription")
            active = not row.get("IsBlkdForPrimaryCostsPosting")
        elif entity == "A_EnterpriseProjectElement":
            erp_id, code = row.get("ProjectElementUUID"), row.get("ProjectElement")
            name, parent = row.get("ProjectElementDescription"), row.get("ParentObjectUUID")
            active = row.get("ProcessingStatus") not in CLOSED_PROJECT_STATUS
        else:
            erp_id, code, name = row.get("ProjectUUID"), row.get("Project"), row.get("ProjectDescription")
            active = row.get("ProcessingStatus") not in CLOSED_PROJECT_STATUS
        if not erp_id:
            raise InvalidResponse(f"SAP {entity}: a record without its key: {row!r}")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=entity,
            erp_id=str(erp_id),
            code=str(code) if code else None,
            name=str(name or code or erp_id),
            active=bool(active),
            updated_at=self._updated(source, row),
            parent_id=str(parent) if parent else None,
            erp_record=row,
        )
