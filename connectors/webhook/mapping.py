"""The generic HTTP connector's pure mapping: the canonical record is the body, and back.

The connector sends the canonical record itself (``{"type", "event_id", "data"}``, or what the
connection's ``body_template`` renders); :func:`resolve_pointer` reads the ERP's record id from an
answer (RFC 6901 JSON pointer) and :func:`stored_canonical` reads a booked document back for
read-back verification (:mod:`ledgerflow.connectors.verify`).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from ledgerflow.connectors.verify import StoredDocument, StoredLine

__all__ = ["resolve_pointer", "stored_canonical"]


def _optional_decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except ArithmeticError:
        return None


def _optional_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def stored_canonical(data: dict[str, Any]) -> StoredDocument:
    """A canonical document's JSON as an endpoint stored it → :class:`~ledgerflow.connectors.verify.StoredDocument`.

    Money is read from the decimal strings; the transaction date is ``posting_date`` (bills) or
    the document's own date (``bill_date``, ``invoice_date``, ``order_date``), the document date
    that own date, plus ``due_date``; lines are ``line_items[].amount`` in order.
    """
    own = next((data[k] for k in ("bill_date", "invoice_date", "order_date") if data.get(k)), None)
    lines = data.get("line_items")
    return StoredDocument(
        total=_optional_decimal(data.get("total")),
        currency=str(data["currency"]) if data.get("currency") else None,
        tax_total=_optional_decimal(data.get("tax_total")),
        shipping_total=_optional_decimal(data.get("shipping_total")),
        discount_total=_optional_decimal(data.get("discount_total")),
        txn_date=_optional_date(data.get("posting_date") or own),
        document_date=_optional_date(own),
        due_date=_optional_date(data.get("due_date")),
        lines=tuple(
            StoredLine(_optional_decimal(line.get("amount")) or Decimal(0), line.get("description"))
            for line in lines
            if isinstance(line, dict)
        )
        if isinstance(lines, list)
        else None,
    )


def resolve_pointer(document: Any, pointer: str) -> Any:
    """Resolve an RFC 6901 JSON pointer (``""`` = whole document, ``/a/0/b``; ``~1`` = ``/``, ``~0`` = ``~``).

    Raises:
        LookupError: the pointer is malformed or names something the document does not have.

    """
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise LookupError(f"JSON pointer {pointer!r} must start with '/'")
    current = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise LookupError(f"JSON pointer {pointer!r}: no {token!r}")
    return current
