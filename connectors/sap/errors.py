"""SAP OData V2 error responses → retriable / permanent, as an :class:`~ledgerflow.core.outbound.client.ErrorTable`.

SAP Gateway answers ``{"error": {"code": "M8/108", "message": {"lang": "en", "value": "…"},
"innererror": {…, "errordetails": [...]}}}`` (reference ``erp_apis.md`` §4.3). Message codes are
``<message class>/<number>``. The CSRF handshake's ``403`` with ``x-csrf-token: Required`` is
handled by the connector (refetch once) before this table is consulted.
``config.options["error_overrides"]`` (``{"http.<status>" | "<code>": "retriable" | "permanent"}``) wins.
"""

from __future__ import annotations

import httpx

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import DEFAULT_ERRORS, ErrorRule, ErrorTable, VendorError, loads_json

__all__ = ["SAP_ERRORS", "extract_error"]

SAP_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        statuses={
            404: ErrorRule(False, ErrorCode.ERP_NOT_FOUND),
            409: ErrorRule(True, ErrorCode.ERP_CONFLICT),
            412: ErrorRule(True, ErrorCode.ERP_STALE_OBJECT),
            423: ErrorRule(True, ErrorCode.ERP_LOCKED),
        },
        vendor_codes={
            "M8/108": ErrorRule(False, ErrorCode.ERP_DUPLICATE),
            "M8/152": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "FH/103": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "M8/534": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "/IWBEP/CM_MGW_RT/020": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "/IWBEP/CM_MGW_RT/004": ErrorRule(True, ErrorCode.HTTP_5XX),
            "MC/601": ErrorRule(True, ErrorCode.ERP_LOCKED),
        },
    )
)
"""SAP's classification table: message code → rule, then HTTP status → rule."""


def extract_error(response: httpx.Response) -> VendorError:
    """``error.message.value`` and ``error.code`` of an OData V2 error body (else the raw text)."""
    try:
        body = loads_json(response.content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        value = message.get("value") if isinstance(message, dict) else message
        code = error.get("code")
        return VendorError(str(value or f"HTTP {response.status_code}")[:1000], str(code) if code else None)
    return VendorError(response.text.strip()[:1000] or f"HTTP {response.status_code}")
