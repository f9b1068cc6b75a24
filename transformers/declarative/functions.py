"""JMESPath functions of declarative mappings: exact decimals, lookups, tenant settings, dates.

JMESPath (https://jmespath.org/specification.html) has no arithmetic and treats numbers as
floats. Mapping files deal with money, so the payload is parsed with every JSON number as
:class:`decimal.Decimal`, the standard functions accept ``Decimal`` wherever they accept a number
(``sum``, ``max``, ``abs``…), and the functions below add exact arithmetic and the look-ups a
mapping needs:

==============================  ===========================================================
``lookup(table, key)``          ``lookups.<table>[key]`` of the mapping file, else null
``setting(name)``               the tenant's source option ``name`` (routing file), else null
``decimal(value)``              a number or numeric string as an exact decimal
``add(a, b)`` / ``sub(a, b)``   exact sum / difference of two numbers
``mul(a, b)`` / ``div(a, b)``   exact product / quotient (``div`` by zero: null)
``minor_to_major(n, ccy)``      an amount in minor units (cents) in major units of ``ccy``
``date(value)``                 the ``YYYY-MM-DD`` of an ISO date or timestamp, as written
``unix_to_date(seconds)``       the UTC date of a unix timestamp
``coalesce(a, b, …)``           the first argument that is not null
``root()``                      the whole event body (inside ``each`` lists, ``@`` is the item)
==============================  ===========================================================

The arithmetic and conversion functions give null when an argument is null (or not a number),
so a missing optional amount stays missing; a required one is then reported by the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import jmespath.exceptions
from jmespath import functions

from ledgerflow.contracts import currency_precision

__all__ = ["MappingFunctions", "to_decimal"]


def to_decimal(value: Any) -> Decimal | None:
    """``value`` as an exact ``Decimal`` (floats through ``str``), or None when it is not a finite number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


class MappingFunctions(functions.Functions):
    """The JMESPath function table of one evaluation (bound to the file's lookups and the tenant's options)."""

    def __init__(self, lookups: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any], root: Any) -> None:
        super().__init__()
        self._lookups = lookups
        self._settings = settings
        self._root = root

    def _get_allowed_pytypes(self, types: Any) -> Any:
        parent: Any = super()  # the type stubs do not list jmespath's type-check hooks
        allowed, subtypes = parent._get_allowed_pytypes(types)
        allowed = [*allowed, "Decimal"] if "float" in allowed else allowed
        subtypes = [(*group, "Decimal") if "float" in group else group for group in subtypes]
        return allowed, subtypes

    def _convert_to_jmespath_type(self, pyobject: Any) -> Any:
        parent: Any = super()
        return "number" if pyobject == "Decimal" else parent._convert_to_jmespath_type(pyobject)

    @functions.signature({"types": []})
    def _func_to_number(self, arg: Any) -> Decimal | None:
        return None if isinstance(arg, list | dict) else to_decimal(arg)

    @functions.signature({"types": []})
    def _func_to_string(self, arg: Any) -> str:
        if isinstance(arg, str):
            return arg
        if isinstance(arg, Decimal):
            return format(arg, "f")
        parent: Any = super()
        return str(parent._func_to_string(arg))

    @functions.signature({"types": []})
    def _func_type(self, arg: Any) -> str:
        parent: Any = super()
        return "number" if isinstance(arg, Decimal) else str(parent._func_type(arg))

    @functions.signature({"types": ["string"]}, {"types": ["string", "number", "null"]})
    def _func_lookup(self, table: str, key: Any) -> Any:
        if key is None:
            return None
        values = self._lookups.get(table)
        if values is None:
            raise jmespath.exceptions.JMESPathError(f"lookup(): the mapping file has no lookup table {table!r}")
        return values.get(format(key, "f") if isinstance(key, Decimal) else str(key))

    @functions.signature({"types": ["string"]})
    def _func_setting(self, name: str) -> Any:
        return self._settings.get(name)

    @functions.signature({"types": []})
    def _func_decimal(self, value: Any) -> Decimal | None:
        return to_decimal(value)

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["number", "string", "null"]})
    def _func_add(self, a: Any, b: Any) -> Decimal | None:
        x, y = to_decimal(a), to_decimal(b)
        return None if x is None or y is None else x + y

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["number", "string", "null"]})
    def _func_sub(self, a: Any, b: Any) -> Decimal | None:
        x, y = to_decimal(a), to_decimal(b)
        return None if x is None or y is None else x - y

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["number", "string", "null"]})
    def _func_mul(self, a: Any, b: Any) -> Decimal | None:
        x, y = to_decimal(a), to_decimal(b)
        return None if x is None or y is None else x * y

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["number", "string", "null"]})
    def _func_div(self, a: Any, b: Any) -> Decimal | None:
        x, y = to_decimal(a), to_decimal(b)
        return None if x is None or y is None or y == 0 else x / y

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["string", "null"]})
    def _func_minor_to_major(self, amount: Any, currency: str | None) -> Decimal | None:
        value = to_decimal(amount)
        if value is None or currency is None:
            return None
        try:
            return value.scaleb(-currency_precision(currency.strip().upper()))
        except Exception:  # babel raises for an unknown code; the contract reports the currency itself
            return None

    @functions.signature({"types": ["string", "null"]})
    def _func_date(self, value: str | None) -> str | None:
        return None if value is None else value.strip()[:10]

    @functions.signature({"types": ["number", "string", "null"]})
    def _func_unix_to_date(self, seconds: Any) -> str | None:
        value = to_decimal(seconds)
        return None if value is None else datetime.fromtimestamp(int(value), tz=UTC).date().isoformat()

    @functions.signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        return next((v for v in values if v is not None), None)

    @functions.signature()
    def _func_root(self) -> Any:
        return self._root
