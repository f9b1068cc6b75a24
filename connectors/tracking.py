"""Tracking references (project, cost code, class, department…) that an ERP cannot be given.

A line's tracking reference without an ERP identifier (no ``accounting_id`` and no
``accounting_custom_id``, only the source's ids) cannot be sent to the ERP. Booking the line
without it would drop the source's job costing silently, and for ERPs whose account string is
made of segments (Coupa) it would book to another account combination. So, by default, such a
document fails naming the reference; a connection that prefers to book without unresolved
tracking sets the option ``unresolved_tracking: omit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledgerflow.connectors.base import UnresolvedReferenceError
from ledgerflow.contracts import Reference

__all__ = ["OMIT", "check_tracking"]

OMIT = "omit"
"""Value of the connection option ``unresolved_tracking`` that books lines without such a reference."""


def check_tracking(ref: Reference, field: str, where: str, erp: str, options: Mapping[str, Any]) -> None:
    """Refuse a tracking reference ``ref`` (line field ``field``) the ERP cannot be given.

    Returns when the connection's option ``unresolved_tracking`` is ``"omit"`` (the caller then
    leaves the reference out).

    Raises:
        UnresolvedReferenceError: naming the reference, the ERP and the option.
    """
    if options.get("unresolved_tracking") == OMIT:
        return
    label = ref.name or ref.source_id or "?"
    raise UnresolvedReferenceError(
        f"{where}: {field.replace('_', ' ')} {label!r} has no {erp} identifier (the source sent no accounting id "
        f"or custom id for it); map it in the source, or set the connection option unresolved_tracking: omit "
        "to book without it"
    )
