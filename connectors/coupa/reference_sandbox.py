"""The Coupa sandbox's reference resources and query syntax, for the ERP reader.

Resources listed (``GET /api/<resource>``, a JSON array; Compass "Suppliers API", "Accounts API",
"Tax Code API", "Lookup Values API (/lookup_values)"): ``suppliers``, ``accounts``, ``tax_codes``,
``lookup_values``. Query arguments as Compass "Arguments" / "Querying Options" / "API Operators"
describe them, checked strictly:

* ``<attribute>=<value>`` (equality) and ``<attribute>[<operator>]=<value>`` with the operators
  ``gt``, ``lt``, ``gt_or_eq``, ``lt_or_eq``, ``not_eq``, ``in``, ``not_in`` (comma-separated),
  ``contains``, ``starts_with``, ``ends_with`` (not on date fields) and ``blank`` (``true`` /
  ``false``); ``<association>[<attribute>]=<value>`` on an association (``account_type[name]``);
  dashes in attribute names are written as underscores (``updated_at``; the hyphenated form is
  accepted too). Dates are ISO 8601 dates or date-times.
* ``limit`` (at most 50 records are returned, as Coupa), ``offset``, ``order_by`` (an attribute)
  with ``dir`` ``asc`` / ``desc`` (ties in ``id`` order), ``return_object`` (``limited`` /
  ``shallow``: accepted, the full object is returned).
* Anything else — an unknown attribute or operator, a malformed date or number — is a ``400``
  ``{"errors": {"<argument>": ["<message>"]}}`` (the sandbox is stricter than Coupa, which may
  ignore an unknown argument and answer more than was asked).

Every record carries ``created-at`` / ``updated-at`` (``YYYY-MM-DDTHH:MM:SS+00:00``, whole seconds,
from the sandbox clock); writes through the API stamp ``updated-at``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "MAX_LIMIT",
    "SEEDED_REFERENCE",
    "SEEDED_SUPPLIERS",
    "QueryError",
    "coupa_time",
    "select",
]

MAX_LIMIT = 50
"""Coupa returns at most 50 records per request."""

ATTRIBUTES: dict[str, dict[str, str]] = {
    "supplier": {
        "id": "integer",
        "name": "string",
        "number": "string",
        "status": "string",
        "created_at": "datetime",
        "updated_at": "datetime",
    },
    "account": {
        "id": "integer",
        "name": "string",
        "code": "string",
        "active": "boolean",
        "account_type": "association",
        "segment_1": "string",
        "segment_2": "string",
        "created_at": "datetime",
        "updated_at": "datetime",
    },
    "tax_code": {
        "id": "integer",
        "code": "string",
        "description": "string",
        "percentage": "float",
        "active": "boolean",
        "country": "association",
        "created_at": "datetime",
        "updated_at": "datetime",
    },
    "lookup_value": {
        "id": "integer",
        "name": "string",
        "description": "string",
        "external_ref_num": "string",
        "external_ref_code": "string",
        "active": "boolean",
        "lookup": "association",
        "lookup_id": "integer",
        "parent_id": "integer",
        "depth": "integer",
        "created_at": "datetime",
        "updated_at": "datetime",
    },
}
"""Queryable attributes (underscored) of each resource's records and their types."""

SEEDED_SUPPLIERS: tuple[dict[str, Any], ...] = (
    {"id": 21, "number": "S-0042", "name": "Bayside Concrete Supply", "status": "active"},
    {"id": 22, "number": "S-0043", "name": "Northwind Electrical", "status": "active"},
    {"id": 23, "number": "S-0044", "name": "Harbour Scaffolding Ltd", "status": "inactive"},
)
"""Suppliers added with ``seed_parties=True`` (besides the demo supplier)."""

_CHART = {"id": 1, "name": "US Chart of Accounts"}
SEEDED_REFERENCE: dict[str, tuple[dict[str, Any], ...]] = {
    "account": (
        {"id": 101, "code": "6000-PROJ-17", "name": "Job Materials", "segment-1": "6000", "segment-2": "PROJ-17"},
        {"id": 102, "code": "6100-PROJ-17", "name": "Subcontractors", "segment-1": "6100", "segment-2": "PROJ-17"},
        {"id": 103, "code": "6200-PROJ-17", "name": "Equipment Rental", "segment-1": "6200", "segment-2": "PROJ-17"},
        {"id": 104, "code": "6900-OLD", "name": "Obsolete Plant", "segment-1": "6900", "active": False},
    ),
    "tax_code": (
        {"id": 201, "code": "CA-7.25", "description": "California sales tax", "percentage": 7.25},
        {"id": 202, "code": "NY-4", "description": "New York state sales tax", "percentage": 4.0},
        {"id": 203, "code": "EXEMPT", "description": "Exempt", "percentage": 0.0, "active": False},
    ),
    "lookup_value": (
        {"id": 301, "name": "PROJ-17 Harbour St Tower", "external-ref-num": "PROJ-17", "depth": 0},
        {"id": 302, "name": "03-300 Concrete", "external-ref-num": "03-300", "parent-id": 301, "depth": 1},
        {"id": 303, "name": "09-900 Finishes", "external-ref-num": "09-900", "parent-id": 301, "depth": 1},
        {"id": 304, "name": "PROJ-09 Riverside", "external-ref-num": "PROJ-09", "depth": 0, "active": False},
    ),
}
"""Accounts (chart "US Chart of Accounts"), tax codes and lookup values every sandbox starts with."""

_OPERATORS = frozenset(
    {"gt", "lt", "gt_or_eq", "lt_or_eq", "not_eq", "in", "not_in", "contains", "starts_with", "ends_with", "blank"}
)
_TEXT_ONLY = frozenset({"contains", "starts_with", "ends_with"})
_CONTROL = frozenset({"limit", "offset", "order_by", "dir", "return_object"})
_ARGUMENT = re.compile(r"^(?P<attribute>[a-z0-9_-]+)(?:\[(?P<inner>[a-z0-9_-]+)\])?(?:\[(?P<op>[a-z_]+)\])?$")


class QueryError(ValueError):
    """An argument Coupa (or this stricter sandbox) refuses: ``argument`` names it."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


def coupa_time(when: datetime) -> str:
    """A Coupa timestamp: ``YYYY-MM-DDTHH:MM:SS+00:00`` (UTC, whole seconds)."""
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


def _when(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC)


def _typed(kind: str, value: Any, argument: str) -> Any:
    """``value`` (stored, or given as text) in ``kind``'s order; None stays None."""
    if value is None:
        return None
    try:
        if kind == "datetime":
            return _when(str(value))
        if kind == "integer":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if str(value) not in ("true", "false"):
                raise ValueError(value)
            return str(value) == "true"
    except ValueError:
        raise QueryError(argument, f"{value!r} is not a valid {kind}") from None
    return str(value)


def _stored(record: Mapping[str, Any], attribute: str) -> Any:
    return record.get(attribute.replace("_", "-"), record.get(attribute))


Condition = Callable[[Mapping[str, Any]], bool]


def _condition(resource: str, argument: str, value: str) -> Condition:
    match = _ARGUMENT.match(argument)
    if match is None:
        raise QueryError(argument, "is not a valid query argument")
    attribute = match["attribute"].replace("-", "_")
    inner: str | None = match["inner"]
    op: str | None = match["op"]
    if inner is not None and op is None and inner.replace("-", "_") in _OPERATORS:
        op, inner = inner.replace("-", "_"), None
    types = ATTRIBUTES[resource]
    if attribute not in types:
        raise QueryError(argument, f"{attribute} is not an attribute of {resource}")
    kind = types[attribute]
    if kind == "association":
        if inner is None:
            raise QueryError(argument, f"{attribute} is an association: query one of its attributes")
        field = inner.replace("_", "-")

        def association(record: Mapping[str, Any]) -> bool:
            linked = _stored(record, attribute)
            return isinstance(linked, Mapping) and str(linked.get(field)) == value

        if op is not None:
            raise QueryError(argument, "operators on association attributes are not supported by this sandbox")
        return association
    if inner is not None:
        raise QueryError(argument, f"{attribute} is not an association")
    if op is None:
        wanted = _typed(kind, value, argument)
        return lambda record: _typed(kind, _stored(record, attribute), argument) == wanted
    if op not in _OPERATORS:
        raise QueryError(argument, f"{op} is not a query operator")
    if op in _TEXT_ONLY and kind == "datetime":
        raise QueryError(argument, f"{op} is not used with date fields")
    if op == "blank":
        if value not in ("true", "false"):
            raise QueryError(argument, "blank accepts true or false")
        blank = value == "true"
        return lambda record: (_stored(record, attribute) in (None, "")) == blank
    if op in ("in", "not_in"):
        values = {_typed(kind, v, argument) for v in value.split(",")}
        inside = op == "in"
        return lambda record: (_typed(kind, _stored(record, attribute), argument) in values) == inside
    if op in _TEXT_ONLY:
        test = {"contains": str.__contains__, "starts_with": str.startswith, "ends_with": str.endswith}[op]
        return lambda record: test(str(_stored(record, attribute) or ""), value)
    wanted = _typed(kind, value, argument)
    compare: Callable[[Any, Any], bool] = {
        "gt": lambda a, b: a > b,
        "lt": lambda a, b: a < b,
        "gt_or_eq": lambda a, b: a >= b,
        "lt_or_eq": lambda a, b: a <= b,
        "not_eq": lambda a, b: a != b,
    }[op]

    def compared(record: Mapping[str, Any]) -> bool:
        stored = _typed(kind, _stored(record, attribute), argument)
        return stored is not None and bool(compare(stored, wanted))

    return compared


def _order_key(resource: str, attribute: str, record: Mapping[str, Any]) -> tuple[int, Any]:
    value = _typed(ATTRIBUTES[resource][attribute], _stored(record, attribute), attribute)
    if value is None:
        return (0, 0)
    return (1, value.timestamp() if isinstance(value, datetime) else value)


def select(resource: str, records: list[dict[str, Any]], params: Mapping[str, str]) -> list[dict[str, Any]]:
    """The records of ``resource`` that ``params`` (query arguments) select, ordered and cut.

    Raises:
        QueryError: an argument of the module docstring's kinds that is malformed or unknown.
    """
    conditions = [_condition(resource, key, value) for key, value in params.items() if key not in _CONTROL]
    found = [record for record in records if all(condition(record) for condition in conditions)]
    found.sort(key=lambda record: int(record["id"]))
    order_by = params.get("order_by")
    if order_by is not None:
        attribute = order_by.replace("-", "_")
        if attribute not in ATTRIBUTES[resource] or ATTRIBUTES[resource][attribute] == "association":
            raise QueryError("order_by", f"{order_by} is not an attribute of {resource}")
        direction = params.get("dir", "asc")
        if direction not in ("asc", "desc"):
            raise QueryError("dir", "must be asc or desc")
        found.sort(key=functools.partial(_order_key, resource, attribute), reverse=direction == "desc")
    elif "dir" in params:
        raise QueryError("dir", "needs order_by")
    if params.get("return_object", "limited") not in ("limited", "shallow"):
        raise QueryError("return_object", "must be limited or shallow")
    try:
        limit = int(params.get("limit", str(MAX_LIMIT)))
        offset = int(params.get("offset", "0"))
    except ValueError:
        raise QueryError("limit", "limit and offset must be integers") from None
    if limit < 1 or offset < 0:
        raise QueryError("limit", "limit must be positive and offset not negative")
    return found[offset : offset + min(limit, MAX_LIMIT)]
