"""The SAP sandbox's read-only reference entity sets, for the ERP reader (OData V2 queries).

Entity sets served (paths in :data:`ENTITY_SETS`, properties and their EDM types in
:data:`PROPERTIES`): ``API_BUSINESS_PARTNER/A_BusinessPartner``,
``API_GLACCOUNTINCHARTOFACCOUNTS_SRV/A_GLAccountInChartOfAccounts`` (``to_Text``),
``API_COSTCENTER_SRV/A_CostCenter`` (``to_Text``) and
``API_ENTERPRISE_PROJECT_SRV;v=0002/A_EnterpriseProject`` / ``A_EnterpriseProjectElement``.

System query options, checked as SAP Gateway does (``400`` in the OData V2 error shape):

* ``$filter``: comparisons ``<Property> eq|ne|gt|ge|lt|le <literal>`` joined by ``and`` / ``or``
  with parentheses; literals ``'text'`` (quotes doubled inside), ``datetime'2024-01-15T10:00:00'``,
  ``datetimeoffset'2024-01-15T10:00:00Z'``, ``time'PT10H00M00S'``, ``true`` / ``false``, ``null``
  (``eq`` / ``ne`` only) and numbers; the literal must fit the property's EDM type and the
  property must exist on the entity type (``/IWBEP/CM_MGW_RT/021``); other syntax is
  ``/IWBEP/CM_MGW_RT/022``.
* ``$orderby`` (properties, ``asc`` / ``desc``; nulls first), ``$top`` / ``$skip`` (digits),
  ``$expand`` (the entity's ``to_Text`` only), ``$select``, ``$format=json``; another ``$`` option
  is ``400``.

Rows are stored as SAP serialises them in OData V2 JSON: ``Edm.DateTime`` as ``/Date(<ms>)/``,
``Edm.DateTimeOffset`` as ``/Date(<ms>+0000)/``, ``Edm.Time`` as ``PT10H00M00S``. A business
partner never changed has no ``LastChangeDate`` / ``LastChangeTime`` (null), as in SAP; the
first change sets them. :meth:`ReferenceData.change` applies a change and stamps it from the
sandbox clock.

Property names follow the EDMX of ``API_BUSINESS_PARTNER`` (SAP-samples
``cloud-cap-risk-management``); those of the G/L account, cost center and enterprise project
services follow SAP Business Accelerator Hub and are not in ``shared/reference`` (assumption).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "ENTITY_SETS",
    "PROPERTIES",
    "FilterError",
    "ReferenceData",
    "odata_date",
    "odata_datetimeoffset",
    "odata_time",
    "parse_odata_filter",
]

ENTITY_SETS: dict[str, str] = {
    "A_BusinessPartner": "/sap/opu/odata/sap/API_BUSINESS_PARTNER/A_BusinessPartner",
    "A_GLAccountInChartOfAccounts": (
        "/sap/opu/odata/sap/API_GLACCOUNTINCHARTOFACCOUNTS_SRV/A_GLAccountInChartOfAccounts"
    ),
    "A_CostCenter": "/sap/opu/odata/sap/API_COSTCENTER_SRV/A_CostCenter",
    "A_EnterpriseProject": "/sap/opu/odata/sap/API_ENTERPRISE_PROJECT_SRV;v=0002/A_EnterpriseProject",
    "A_EnterpriseProjectElement": "/sap/opu/odata/sap/API_ENTERPRISE_PROJECT_SRV;v=0002/A_EnterpriseProjectElement",
}
"""Entity set → path below the tenant host."""

_S = "Edm.String"
PROPERTIES: dict[str, dict[str, str]] = {
    "A_BusinessPartner": {
        "BusinessPartner": _S,
        "Customer": _S,
        "Supplier": _S,
        "BusinessPartnerCategory": _S,
        "BusinessPartnerFullName": _S,
        "BusinessPartnerName": _S,
        "CreationDate": "Edm.DateTime",
        "CreationTime": "Edm.Time",
        "LastChangeDate": "Edm.DateTime",
        "LastChangeTime": "Edm.Time",
        "BusinessPartnerIsBlocked": "Edm.Boolean",
        "IsMarkedForArchiving": "Edm.Boolean",
    },
    "A_GLAccountInChartOfAccounts": {
        "ChartOfAccounts": _S,
        "GLAccount": _S,
        "GLAccountType": _S,
        "GLAccountGroup": _S,
        "IsBalanceSheetAccount": "Edm.Boolean",
        "AccountIsMarkedForDeletion": "Edm.Boolean",
        "AccountIsBlockedForPosting": "Edm.Boolean",
        "CreationDate": "Edm.DateTime",
        "LastChangeDateTime": "Edm.DateTimeOffset",
    },
    "A_CostCenter": {
        "ControllingArea": _S,
        "CostCenter": _S,
        "ValidityEndDate": "Edm.DateTime",
        "ValidityStartDate": "Edm.DateTime",
        "CompanyCode": _S,
        "CostCenterCategory": _S,
        "IsBlkdForPrimaryCostsPosting": "Edm.Boolean",
    },
    "A_EnterpriseProject": {
        "ProjectUUID": "Edm.Guid",
        "Project": _S,
        "ProjectDescription": _S,
        "CompanyCode": _S,
        "ProcessingStatus": _S,
        "ProjectStartDate": "Edm.DateTime",
        "ProjectEndDate": "Edm.DateTime",
        "LastChangeDateTime": "Edm.DateTimeOffset",
    },
    "A_EnterpriseProjectElement": {
        "ProjectElementUUID": "Edm.Guid",
        "ProjectUUID": "Edm.Guid",
        "ProjectElement": _S,
        "ProjectElementDescription": _S,
        "ParentObjectUUID": "Edm.Guid",
        "ProcessingStatus": _S,
        "LastChangeDateTime": "Edm.DateTimeOffset",
    },
}
"""Properties (and EDM types) of each entity type the sandbox serves."""

_EXPANDABLE = {"A_GLAccountInChartOfAccounts": "to_Text", "A_CostCenter": "to_Text"}
_SYSTEM_OPTIONS = frozenset({"$filter", "$orderby", "$top", "$skip", "$expand", "$select", "$format"})


class FilterError(ValueError):
    """A ``$filter`` / query option SAP Gateway would refuse: ``code`` is its message id."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def odata_date(when: datetime) -> str:
    """``Edm.DateTime`` in OData V2 JSON: ``/Date(<ms since epoch, UTC>)/``."""
    return f"/Date({int(when.astimezone(UTC).timestamp() * 1000)})/"


def odata_datetimeoffset(when: datetime) -> str:
    """``Edm.DateTimeOffset`` in OData V2 JSON: ``/Date(<ms>+0000)/``."""
    return f"/Date({int(when.astimezone(UTC).timestamp() * 1000)}+0000)/"


def odata_time(when: datetime) -> str:
    """``Edm.Time`` in OData V2 JSON: ``PT<h>H<m>M<s>S`` (the time of day)."""
    return f"PT{when.hour:02d}H{when.minute:02d}M{when.second:02d}S"


_JSON_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_TIME = re.compile(r"^PT(\d{1,2})H(\d{1,2})M(\d{1,2})(?:\.\d+)?S$")


def _comparable(edm: str, value: Any) -> Any:
    """A stored (JSON) or literal value of type ``edm`` as something ordered (None stays None)."""
    if value is None:
        return None
    if edm in ("Edm.DateTime", "Edm.DateTimeOffset"):
        if isinstance(value, datetime):
            return value
        match = _JSON_DATE.match(str(value))
        if match is None:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid date value {value!r}")
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)
    if edm == "Edm.Time":
        if isinstance(value, timedelta):
            return value
        match = _TIME.match(str(value))
        if match is None:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid time value {value!r}")
        hours, minutes, seconds = (int(g) for g in match.groups())
        return timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return value


# Filter grammar ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))"
    r"|(?P<typed>(?:datetimeoffset|datetime|time|guid)'[^']*')"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<word>[A-Za-z_]\w*))"
)
_OPERATORS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_LITERAL_TYPES = {"datetime": "Edm.DateTime", "datetimeoffset": "Edm.DateTimeOffset", "time": "Edm.Time"}

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class _Literal:
    edm: str | None  # None: null
    value: Any


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid $filter syntax at: {text[position:]}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _literal(kind: str, text: str) -> _Literal:
    if kind == "string":
        return _Literal(_S, text[1:-1].replace("''", "'"))
    if kind == "number":
        return _Literal("Edm.Decimal", float(text))
    if kind == "word" and text in ("true", "false"):
        return _Literal("Edm.Boolean", text == "true")
    if kind == "word" and text == "null":
        return _Literal(None, None)
    if kind == "typed":
        prefix, _, rest = text.partition("'")
        raw = rest[:-1]
        if prefix == "guid":
            return _Literal("Edm.Guid", raw)
        edm = _LITERAL_TYPES[prefix]
        try:
            if prefix == "time":
                return _Literal(edm, _comparable(edm, raw))
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid {prefix} literal {text}") from None
        if prefix == "datetime" and parsed.tzinfo is not None:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"A datetime literal has no offset: {text}")
        if prefix == "datetimeoffset" and parsed.tzinfo is None:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"A datetimeoffset literal needs an offset: {text}")
        return _Literal(edm, parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC))
    raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid literal {text}")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
}


def parse_odata_filter(text: str, properties: Mapping[str, str]) -> Predicate:
    """An OData V2 ``$filter`` (the grammar of the module docstring) over ``properties`` → predicate on rows.

    Raises:
        FilterError: unknown property (``/IWBEP/CM_MGW_RT/021``), a literal of another type than
            its property, or any other syntax (``/IWBEP/CM_MGW_RT/022``).
    """
    tokens = _tokens(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise FilterError("/IWBEP/CM_MGW_RT/022", "The $filter ends too early")
        position += 1
        return tokens[position - 1]

    def comparison() -> Predicate:
        kind, name = take()
        if kind == "open":
            inner = disjunction()
            if take()[0] != "close":
                raise FilterError("/IWBEP/CM_MGW_RT/022", "Missing ')' in $filter")
            return inner
        if kind != "word":
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Expected a property at {name!r}")
        if name not in properties:
            raise FilterError("/IWBEP/CM_MGW_RT/021", f"Property {name} not found in type")
        op_kind, operator = take()
        if op_kind != "word" or operator not in _OPERATORS:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid operator {operator!r} after {name}")
        literal = _literal(*take())
        edm = properties[name]
        if literal.edm is None:
            if operator not in ("eq", "ne"):
                raise FilterError("/IWBEP/CM_MGW_RT/022", f"null can only be compared with eq or ne ({name})")
        elif literal.edm != edm and not (literal.edm == "Edm.Decimal" and edm.startswith(("Edm.Int", "Edm.Dec"))):
            raise FilterError(
                "/IWBEP/CM_MGW_RT/022", f"Invalid literal for property {name} of type {edm}: {literal.edm} given"
            )
        compare = _COMPARE[operator]
        wanted = literal.value

        def predicate(row: Mapping[str, Any]) -> bool:
            value = _comparable(edm, row.get(name))
            if value is None or wanted is None:
                return (value is None) == (wanted is None) if operator == "eq" else (value is None) != (wanted is None)
            return compare(value, wanted)

        return predicate

    def conjunction() -> Predicate:
        terms = [comparison()]
        while (token := peek()) is not None and token == ("word", "and"):
            take()
            terms.append(comparison())
        return lambda row: all(term(row) for term in terms)

    def disjunction() -> Predicate:
        terms = [conjunction()]
        while (token := peek()) is not None and token == ("word", "or"):
            take()
            terms.append(conjunction())
        return lambda row: any(term(row) for term in terms)

    predicate = disjunction()
    if position != len(tokens):
        raise FilterError("/IWBEP/CM_MGW_RT/022", f"Unexpected {tokens[position][1]!r} in $filter")
    return predicate


# The data ----------------------------------------------------------------------------------------


class ReferenceData:
    """The reference entity sets' rows, a clock, and the query semantics of the module docstring.

    Args:
        clock: the time changes are stamped with (UTC).
        seed_parties: also business partners beyond those of the supplier seeds (customers, a
            blocked and a changed supplier).
        suppliers: the supplier seeds (``Supplier``, ``SupplierName``, optional ``BusinessPartner``),
            which become business partners never changed since their creation.
        gl_accounts: G/L accounts the company posts to besides the seeded chart (the sandbox's
            ``gl_accounts``), listed too so that what the G/L account API answers is what
            posting accepts.
    """

    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        seed_parties: bool,
        suppliers: list[Mapping[str, str]],
        gl_accounts: Iterable[str] = (),
    ) -> None:
        self.clock = clock
        self.rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ENTITY_SETS}
        now = clock()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        created = {"CreationDate": odata_date(midnight), "CreationTime": odata_time(now)}
        for seed in suppliers:
            partner = seed.get("BusinessPartner", seed["Supplier"])
            self.add_partner(partner, seed.get("SupplierName", ""), supplier=seed["Supplier"], stamps=created)
        if seed_parties:
            changed = {
                **created,
                "LastChangeDate": created["CreationDate"],
                "LastChangeTime": odata_time(now),
            }
            self.add_partner("1000130", "Harbour Scaffolding Ltd", supplier="1000130", blocked=True, stamps=changed)
            self.add_partner("1000140", "Bayside Concrete Supply", supplier="1000140", stamps=changed)
            self.add_partner("2000010", "Riverside Developments", customer="2000010", stamps=created)
            self.add_partner("2000020", "City of Walldorf", customer="2000020", stamps=changed)
        stamp = odata_datetimeoffset(now)
        chart = [
            ("600394", "Job materials (Mercoa sample account)", "P", False),
            ("61008000", "Purchased services", "P", False),
            ("61002000", "Construction materials", "P", False),
            ("61003000", "Subcontractor costs", "P", False),
            ("21100000", "Trade payables", "X", False),
            ("15400000", "Input tax", "X", False),
            ("61009000", "Obsolete plant hire", "P", True),
        ]
        listed = {account for account, *_ in chart}
        chart.extend(
            (account, f"G/L account {account}", "P", False) for account in gl_accounts if account not in listed
        )
        for account, name, kind, deleted in chart:
            self.rows["A_GLAccountInChartOfAccounts"][account] = {
                "ChartOfAccounts": "YCOA",
                "GLAccount": account,
                "GLAccountType": kind,
                "GLAccountGroup": "PL" if kind == "P" else "BS",
                "IsBalanceSheetAccount": kind == "X",
                "AccountIsMarkedForDeletion": deleted,
                "AccountIsBlockedForPosting": deleted,
                "CreationDate": created["CreationDate"],
                "LastChangeDateTime": stamp,
                "to_Text": {
                    "results": [
                        {
                            "ChartOfAccounts": "YCOA",
                            "GLAccount": account,
                            "Language": "EN",
                            "GLAccountName": name[:20],
                            "GLAccountLongName": name,
                        }
                    ]
                },
            }
        for center, name, blocked in (
            ("10101101", "Site Operations", False),
            ("10101201", "Head Office", False),
            ("10101301", "Plant Yard", True),
        ):
            self.rows["A_CostCenter"][center] = {
                "ControllingArea": "A000",
                "CostCenter": center,
                "ValidityEndDate": odata_date(datetime(9999, 12, 31, tzinfo=UTC)),
                "ValidityStartDate": odata_date(datetime(2020, 1, 1, tzinfo=UTC)),
                "CompanyCode": "1010",
                "CostCenterCategory": "F",
                "IsBlkdForPrimaryCostsPosting": blocked,
                "to_Text": {
                    "results": [
                        {"ControllingArea": "A000", "CostCenter": center, "Language": "EN", "CostCenterName": name}
                    ]
                },
            }
        projects = (
            ("0a1b2c3d-0000-4000-8000-000000000017", "P-000017", "Harbour St Tower", "10"),
            ("0a1b2c3d-0000-4000-8000-000000000009", "P-000009", "Riverside Car Park", "42"),
        )
        for uuid, project, name, status in projects:
            self.rows["A_EnterpriseProject"][uuid] = {
                "ProjectUUID": uuid,
                "Project": project,
                "ProjectDescription": name,
                "CompanyCode": "1010",
                "ProcessingStatus": status,
                "LastChangeDateTime": stamp,
            }
        top = "0a1b2c3d-1000-4000-8000-000000000017"
        for uuid, element, name, parent in (
            (top, "P-000017", "Harbour St Tower", projects[0][0]),
            ("0a1b2c3d-1000-4000-8000-000000000171", "P-000017.1", "Substructure", top),
            ("0a1b2c3d-1000-4000-8000-000000000172", "P-000017.2", "Concrete frame", top),
        ):
            self.rows["A_EnterpriseProjectElement"][uuid] = {
                "ProjectElementUUID": uuid,
                "ProjectUUID": projects[0][0],
                "ProjectElement": element,
                "ProjectElementDescription": name,
                "ParentObjectUUID": parent,
                "ProcessingStatus": "10",
                "LastChangeDateTime": stamp,
            }

    def add_partner(
        self,
        partner: str,
        name: str,
        *,
        supplier: str = "",
        customer: str = "",
        blocked: bool = False,
        stamps: Mapping[str, str],
    ) -> None:
        """Store business partner ``partner`` (with its ``Supplier`` / ``Customer`` number)."""
        self.rows["A_BusinessPartner"][partner] = {
            "BusinessPartner": partner,
            "Customer": customer,
            "Supplier": supplier,
            "BusinessPartnerCategory": "2",
            "BusinessPartnerFullName": name,
            "BusinessPartnerName": name[:35],
            "LastChangeDate": None,
            "LastChangeTime": None,
            "BusinessPartnerIsBlocked": blocked,
            "IsMarkedForArchiving": False,
            **stamps,
        }

    def change(self, entity_set: str, key: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``patch`` to one row and stamp the change (``LastChangeDate``/``Time`` or ``LastChangeDateTime``).

        Raises:
            KeyError: no such row.
        """
        row = self.rows[entity_set][key]
        row.update(patch)
        now = self.clock()
        if entity_set == "A_BusinessPartner":
            row["LastChangeDate"] = odata_date(now.replace(hour=0, minute=0, second=0, microsecond=0))
            row["LastChangeTime"] = odata_time(now)
        elif "LastChangeDateTime" in PROPERTIES[entity_set]:
            row["LastChangeDateTime"] = odata_datetimeoffset(now)
        return row

    def query(self, entity_set: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """The rows ``params`` (system query options) select, in order, cut and projected.

        Raises:
            FilterError: an option SAP Gateway would refuse.
        """
        properties = PROPERTIES[entity_set]
        unknown = sorted(k for k in params if k.startswith("$") and k not in _SYSTEM_OPTIONS)
        if unknown:
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"System query option {unknown[0]} is not supported")
        if params.get("$format", "json") != "json":
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Format {params['$format']} is not supported")
        rows = list(self.rows[entity_set].values())
        if params.get("$filter"):
            predicate = parse_odata_filter(params["$filter"], properties)
            rows = [row for row in rows if predicate(row)]
        if params.get("$orderby"):
            keys: list[tuple[str, bool]] = []
            for part in params["$orderby"].split(","):
                bits = part.split()
                if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
                    raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid $orderby: {params['$orderby']}")
                if bits[0] not in properties:
                    raise FilterError("/IWBEP/CM_MGW_RT/021", f"Property {bits[0]} not found in type")
                keys.append((bits[0], len(bits) == 2 and bits[1] == "desc"))
            for name, descending in reversed(keys):
                edm = properties[name]
                rows.sort(key=functools.partial(_row_key, edm, name), reverse=descending)
        skip, top = params.get("$skip", "0"), params.get("$top")
        if not skip.isdigit() or (top is not None and not top.isdigit()):
            raise FilterError("/IWBEP/CM_MGW_RT/022", f"Invalid $skip or $top: {skip!r}, {top!r}")
        rows = rows[int(skip) :]
        if top is not None:
            rows = rows[: int(top)]
        expand = [e for e in params.get("$expand", "").split(",") if e]
        for nav in expand:
            if _EXPANDABLE.get(entity_set) != nav:
                raise FilterError("/IWBEP/CM_MGW_RT/021", f"Navigation property {nav} not found in type")
        select = [s for s in params.get("$select", "").split(",") if s]
        for name in select:
            if name not in properties and name not in expand:
                raise FilterError("/IWBEP/CM_MGW_RT/021", f"Property {name} not found in type")
        out: list[dict[str, Any]] = []
        for row in rows:
            shown = {k: v for k, v in row.items() if k in properties or k in expand}
            if select:
                shown = {k: v for k, v in shown.items() if k in select}
            out.append(shown)
        return out


def _row_key(edm: str, name: str, row: Mapping[str, Any]) -> tuple[int, Any]:
    return _order_key(edm, row.get(name))


def _order_key(edm: str, value: Any) -> tuple[int, Any]:
    """Nulls first, then values in their type's order."""
    comparable = _comparable(edm, value)
    if comparable is None:
        return (0, 0)
    if isinstance(comparable, datetime):
        return (1, comparable.timestamp())
    if isinstance(comparable, timedelta):
        return (1, comparable.total_seconds())
    return (1, comparable)
