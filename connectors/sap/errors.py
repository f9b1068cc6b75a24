"""SAP OData V2 error responses → retriable / permanent, as an :class:`~ledgerflow.connectors.http.ErrorTable`.

SAP Gateway answers ``{"error": {"code": "M8/108", "message": {"lang": "en", "value": "…"},
"innererror": {…, "errordetails": [...]}}}`` (reference ``erp_apis.md`` §4.3). Message codes are
``<message class>/<number>``. The CSRF handshake's ``403`` with ``x-csrf-token: Required`` is
handled by the connector (refetch once) before this table is consulted.
``config.options["error_overrides"]`` (``{"http.<status>" | "<code>": "retriable" | "permanent"}``) wins.
"""

from __future__ import annotations

import httpx

from ledgerflow.connectors.http import DEFAULT_ERRORS, ErrorRule, ErrorTable, VendorError, loads_json

__all__ = ["SAP_ERRORS", "extract_error"]

SAP_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        statuses={
            404: ErrorRule(False, "sap.not_found"),
            409: ErrorRule(True, "sap.conflict"),
            412: ErrorRule(True, "sap.etag_mismatch"),
            423: ErrorRule(True, "sap.locked"),
        },
        vendor_codes={
            "M8/108": ErrorRule(False, "erp.duplicate"),
            "M8/152": ErrorRule(False, "erp.unknown_reference"),
            "FH/103": ErrorRule(False, "erp.unknown_reference"),
            "M8/534": ErrorRule(False, "erp.validation"),
            "/IWBEP/CM_MGW_RT/020": ErrorRule(False, "erp.validation"),
            "/IWBEP/CM_MGW_RT/004": ErrorRule(True, "http.5xx"),
            "MC/601": ErrorRule(True, "sap.locked"),
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
