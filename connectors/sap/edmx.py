"""Read entity types from an OData V2 EDMX document and check JSON entities against them (sandbox side).

Parses ``<EntityType>`` elements (``Property`` with ``Type``, ``MaxLength``, ``Precision``,
``Scale``, ``Nullable``; ``NavigationProperty`` names) with the standard library's ElementTree —
the EDMX of ``API_SUPPLIERINVOICE_PROCESS_SRV`` (``specs/sap_si.edmx``) is a trusted local file.
Checks follow OData V2 JSON format rules: ``Edm.String`` a string within ``MaxLength``;
``Edm.Decimal`` a decimal *string* within ``Precision``/``Scale``; ``Edm.DateTime``
``"/Date(<ms>)/"`` or ``"YYYY-MM-DDThh:mm:ss"``; ``Edm.Boolean`` a boolean; ``Edm.Int*`` integers.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["EntityType", "PropertyType", "load_entity_types", "property_problems"]

_DATETIME = re.compile(r"^/Date\(-?\d+([+-]\d{4})?\)/$|^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


@dataclass(frozen=True, slots=True)
class PropertyType:
    """One ``Property`` of an entity type."""

    name: str
    edm_type: str
    max_length: int | None
    precision: int | None
    scale: int | None
    nullable: bool


@dataclass(frozen=True, slots=True)
class EntityType:
    """An ``EntityType``: its properties by name and its navigation property names."""

    name: str
    properties: dict[str, PropertyType]
    navigation: frozenset[str]


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


@lru_cache(maxsize=4)
def load_entity_types(path: Path) -> dict[str, EntityType]:
    """Entity types of an EDMX file by name (``A_SupplierInvoiceType`` …), cached per path.

    Raises:
        OSError: the file cannot be read.
        xml.etree.ElementTree.ParseError: it is not XML.

    """
    root = ET.parse(path).getroot()  # noqa: S314 - trusted local file
    types: dict[str, EntityType] = {}
    for element in root.iter():
        if not element.tag.endswith("}EntityType"):
            continue
        properties: dict[str, PropertyType] = {}
        navigation: set[str] = set()
        for child in element:
            name = child.get("Name")
            if name is None:
                continue
            if child.tag.endswith("}Property"):
                properties[name] = PropertyType(
                    name=name,
                    edm_type=child.get("Type", "Edm.String"),
                    max_length=_int(child.get("MaxLength")),
                    precision=_int(child.get("Precision")),
                    scale=_int(child.get("Scale")),
                    nullable=child.get("Nullable", "true") != "false",
                )
            elif child.tag.endswith("}NavigationProperty"):
                navigation.add(name)
        type_name = element.get("Name", "")
        types[type_name] = EntityType(type_name, properties, frozenset(navigation))
    return types


def _decimal_problem(prop: PropertyType, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"{prop.name}: Edm.Decimal must be sent as a decimal string, got {type(value).__name__}"
    try:
        number = Decimal(value)
    except InvalidOperation:
        return f"{prop.name}: {value!r} is not a decimal"
    if not number.is_finite():
        return f"{prop.name}: {value!r} is not a finite decimal"
    exponent = number.as_tuple().exponent
    decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if prop.scale is not None and decimals > prop.scale:
        return f"{prop.name}: {value} has more than {prop.scale} decimals"
    digits = len(number.as_tuple().digits) - decimals
    if prop.precision is not None and prop.scale is not None and digits > prop.precision - prop.scale:
        return f"{prop.name}: {value} exceeds precision {prop.precision}"
    return None


def property_problems(entity: EntityType, body: dict[str, Any]) -> list[str]:
    """Problems of ``body`` as an instance of ``entity`` (navigation properties are not descended).

    Unknown property names, wrong JSON types for the EDM type, too-long strings, too many digits.
    """
    problems: list[str] = []
    for name, value in body.items():
        if name in entity.navigation or name == "__metadata":
            continue
        prop = entity.properties.get(name)
        if prop is None:
            problems.append(f"Property '{name}' is invalid for {entity.name}")
            continue
        if value is None:
            if not prop.nullable:
                problems.append(f"{name}: may not be null")
            continue
        kind = prop.edm_type
        if kind == "Edm.String":
            if not isinstance(value, str):
                problems.append(f"{name}: Edm.String expected, got {type(value).__name__}")
            elif prop.max_length is not None and len(value) > prop.max_length:
                problems.append(f"{name}: longer than {prop.max_length} characters")
        elif kind == "Edm.Decimal":
            if (problem := _decimal_problem(prop, value)) is not None:
                problems.append(problem)
        elif kind == "Edm.DateTime":
            if not isinstance(value, str) or not _DATETIME.match(value):
                problems.append(f"{name}: Edm.DateTime expected as /Date(ms)/, got {value!r}")
        elif kind == "Edm.Boolean":
            if not isinstance(value, bool):
                problems.append(f"{name}: Edm.Boolean expected, got {type(value).__name__}")
        elif kind.startswith(("Edm.Int", "Edm.Byte")) and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name}: {kind} expected, got {type(value).__name__}")
    return problems
