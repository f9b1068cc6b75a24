"""Reference resolution every connector shares: a connection's mapping table, then ERP ids only.

A canonical :class:`~ledgerflow.contracts.Reference` carries source ids (``source_id``,
``source_accounting_id``) and ERP identifiers (``accounting_id``, ``accounting_custom_id``). Only
the latter, or a name lookup, may reach an ERP (issue 14: an INGENIOUS internal id must never be
sent as a VendorRef / AccountRef / ContactID / ClassRef / supplier id).

:func:`apply_reference_map` runs in the connector runtime before a record reaches its connector:
a connection's ``options.reference_map`` overrides what the source said, per reference kind::

    connections:
      qbo-main:
        erp: quickbooks
        options:
          reference_map:
            gl_account:                     # Monite ledger_account_id / INGENIOUS accounting_entity_id / code
              f5f85999-cc35-43e6-93ad-46d22907022a: "84"
            vendor: {acc_co_88: "56"}
            cost_code: {"03-3000": "5000000000000123"}

A key matches the reference's ``source_accounting_id``, ``source_id``, ``accounting_custom_id``
or ``accounting_id`` (in that order); the value becomes the reference's ``accounting_id`` — the
ERP's own id of the object (QuickBooks ``Id``, Xero account ``Code`` / ``ContactID``, NetSuite
internal id, SAP G/L account or supplier number, Coupa id) — and the ERP-side fields the source
sent are replaced, so the table always wins. Kinds are the canonical field names:
``vendor``, ``customer``, ``party``, ``gl_account``, ``cost_code``, ``cost_type``, ``project``,
``business_unit``, ``tax_rate``, ``item``, ``bank_account``, ``ap_account``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from ledgerflow.contracts import CanonicalRecord, Reference
from ledgerflow.core.reference_cache import MAPPING_KINDS

__all__ = ["REFERENCE_KINDS", "ReferenceMapError", "apply_reference_map", "source_reference_ids"]

REFERENCE_KINDS = MAPPING_KINDS
"""Reference fields a ``reference_map`` may name (canonical field names)."""

R = TypeVar("R", bound=CanonicalRecord)


class ReferenceMapError(ValueError):
    """``options.reference_map`` is malformed (the message names the kind and what is wrong)."""


def _table(options: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    raw = options.get("reference_map") or {}
    if not isinstance(raw, Mapping):
        raise ReferenceMapError("options.reference_map must be a mapping of reference kind → {source key: ERP id}")
    table: dict[str, dict[str, str]] = {}
    for kind, entries in raw.items():
        if kind not in REFERENCE_KINDS:
            raise ReferenceMapError(f"options.reference_map.{kind}: unknown reference kind (one of {REFERENCE_KINDS})")
        if not isinstance(entries, Mapping):
            raise ReferenceMapError(f"options.reference_map.{kind} must map source keys to ERP ids")
        table[str(kind)] = {str(k): str(v) for k, v in entries.items() if v not in (None, "")}
    return table


def _mapped(ref: Reference, entries: Mapping[str, str]) -> Reference:
    for key in (ref.source_accounting_id, ref.source_id, ref.accounting_custom_id, ref.accounting_id):
        if key and key in entries:
            return ref.model_copy(update={"accounting_id": entries[key], "accounting_custom_id": None})
    return ref


def _walk(node: Any, table: Mapping[str, Mapping[str, str]], kind: str | None) -> Any:
    """Rebuild ``node`` with every mapped reference replaced; unchanged objects are returned as they are."""
    if isinstance(node, Reference):
        entries = table.get(kind or "")
        return _mapped(node, entries) if entries else node
    if isinstance(node, BaseModel):
        updates: dict[str, Any] = {}
        for name in type(node).model_fields:
            value = getattr(node, name)
            new = _walk(value, table, name)
            if new is not value:
                updates[name] = new
        return node.model_copy(update=updates) if updates else node
    if isinstance(node, list):
        items = [_walk(item, table, kind) for item in node]
        return items if any(a is not b for a, b in zip(items, node, strict=True)) else node
    return node


def apply_reference_map(record: R, options: Mapping[str, Any]) -> R:
    """``record`` with the connection's ``options.reference_map`` applied to every reference in it.

    Returns the same object when the connection has no table or nothing matched.

    Raises:
        ReferenceMapError: the table is malformed (an unknown kind, entries that are not a mapping).
    """
    table = _table(options)
    if not table:
        return record
    result: R = _walk(record, table, None)
    return result


def source_reference_ids(record: CanonicalRecord) -> set[str]:
    """Every source-side id in ``record``'s references (``source_id``, ``source_accounting_id``).

    For tests and audits: none of these may appear in an ERP request body as an id, unless the
    same string is also one of the record's ERP identifiers.
    """
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, Reference):
            found.update(v for v in (node.source_id, node.source_accounting_id) if v)
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                visit(getattr(node, name))
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(record)
    return found
