"""NetSuite error responses → retriable / permanent, as an :class:`~ledgerflow.core.outbound.client.ErrorTable`.

NetSuite REST errors are RFC 7807-like ``{"type", "title", "status", "o:errorDetails": [{"detail",
"o:errorCode", "o:errorPath"}]}`` (schema ``nsError`` in the OpenAPI description; reference
``erp_apis.md`` §3.3, Oracle help section_156570709583). :data:`NETSUITE_ERRORS` decides by
``o:errorCode`` first, then by HTTP status; ``config.options["error_overrides"]``
(``{"http.<status>" | "<o:errorCode>": "retriable" | "permanent"}``) wins over both (applied by
:meth:`ledgerflow.core.outbound.client.ErpClient.for_connection`).
"""

from __future__ import annotations

import httpx

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import DEFAULT_ERRORS, ErrorRule, ErrorTable, VendorError, loads_json

__all__ = ["NETSUITE_ERRORS", "extract_error"]

NETSUITE_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        statuses={
            409: ErrorRule(True, ErrorCode.ERP_CONFLICT),
            404: ErrorRule(False, ErrorCode.ERP_NOT_FOUND),
        },
        vendor_codes={
            "CONCURRENCY_LIMIT_EXCEEDED": ErrorRule(True, ErrorCode.HTTP_429),
            "REQUEST_LIMIT_EXCEEDED": ErrorRule(True, ErrorCode.HTTP_429),
            "SSS_REQUEST_LIMIT_EXCEEDED": ErrorRule(True, ErrorCode.HTTP_429),
            "UNEXPECTED_ERROR": ErrorRule(True, ErrorCode.HTTP_5XX),
            "RCRD_LOCKED_BY_WF": ErrorRule(True, ErrorCode.ERP_LOCKED),
            "INVALID_LOGIN": ErrorRule(False, ErrorCode.AUTH_REJECTED),
            "INVALID_LOGIN_ATTEMPT": ErrorRule(False, ErrorCode.AUTH_REJECTED),
            "INSUFFICIENT_PERMISSION": ErrorRule(False, ErrorCode.AUTH_FORBIDDEN),
            "INVALID_CONTENT": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "USER_ERROR": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "INVALID_KEY_OR_REF": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "NONEXISTENT_ID": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "IDEMPOTENCY_ERROR": ErrorRule(False, ErrorCode.ERP_DUPLICATE),
        },
    )
)
"""NetSuite's classification table: ``o:errorCode`` → rule, then HTTP status → rule."""


def extract_error(response: httpx.Response) -> VendorError:
    """The first ``o:errorDetails`` entry of an nsError body: ``detail (at o:errorPath)`` and ``o:errorCode``.

    Falls back to the problem ``title`` and then to the raw text for bodies that are not nsError.
    """
    try:
        body = loads_json(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        details = body.get("o:errorDetails")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            first = details[0]
            code = first.get("o:errorCode")
            detail = str(first.get("detail") or body.get("title") or f"HTTP {response.status_code}")
            path = first.get("o:errorPath")
            message = f"{detail} (at {path})" if path else detail
            return VendorError(message[:1000], str(code) if code else None)
        if isinstance(body.get("title"), str):
            return VendorError(body["title"][:1000])
    return VendorError(response.text.strip()[:1000] or f"HTTP {response.status_code}")
