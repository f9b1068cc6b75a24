"""Coupa error responses → retriable / permanent, as an :class:`~ledgerflow.core.outbound.client.ErrorTable`.

Coupa answers errors as ``{"errors": {"<field>": ["<message>", …]}}`` in JSON (``<errors><error>``
in XML; reference ``erp_apis.md`` §5.3, Compass "Differences between XML and JSON"), 429 when the
25 requests/second limit is exceeded. Coupa has no vendor error codes, so the first erroring
*field* stands in for one: ``{"invoice-number": ["has already been taken"]}`` → code
``invoice-number``. ``config.options["error_overrides"]`` (``{"http.<status>" | "<field>":
"retriable" | "permanent"}``) wins.
"""

from __future__ import annotations

import httpx

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import DEFAULT_ERRORS, ErrorRule, ErrorTable, VendorError, loads_json

__all__ = ["COUPA_ERRORS", "extract_error"]

COUPA_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        statuses={
            404: ErrorRule(False, ErrorCode.ERP_NOT_FOUND),
            406: ErrorRule(False, ErrorCode.ERP_NOT_ACCEPTABLE),
            409: ErrorRule(True, ErrorCode.ERP_CONFLICT),
            422: ErrorRule(False, ErrorCode.ERP_VALIDATION),
        },
        vendor_codes={
            "supplier": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "account": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "status": ErrorRule(False, ErrorCode.ERP_INVALID_STATE),
        },
    )
)
"""Coupa's classification table: erroring field → rule, then HTTP status → rule."""


def extract_error(response: httpx.Response) -> VendorError:
    """``"<field>: <message>; …"`` from a Coupa ``errors`` body, with the first field as vendor code."""
    try:
        body = loads_json(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), dict) and body["errors"]:
        errors: dict[str, object] = body["errors"]
        parts = []
        for field, messages in errors.items():
            text = ", ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{field}: {text}")
        return VendorError("; ".join(parts)[:1000], next(iter(errors)))
    return VendorError(response.text.strip()[:1000] or f"HTTP {response.status_code}")
