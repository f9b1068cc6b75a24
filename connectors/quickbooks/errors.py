"""QuickBooks Online error classification: HTTP status and Intuit ``Fault`` codes → retriable or permanent.

Facts (``shared/reference/erp_apis.md`` §1.3, Intuit "Error codes" and "Top QuickBooks Online API
errors"): faults are ``{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type": …},
"time": …}``, also inside a 200 answer; 5010 = stale ``SyncToken`` (another writer got there
first: retriable, the next attempt re-reads the record), 6240 = duplicate name, 6140 = duplicate
document number, 610 = object not found or inactive, 2500 = invalid reference id (unknown
account, vendor…), 003001 = throttled (429), 3200/3100 = authentication/authorisation failures.

Override per connection with ``options.error_overrides`` (see
:meth:`ledgerflow.core.outbound.client.ErrorTable.with_overrides`).
"""

from __future__ import annotations

import httpx

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import (
    DEFAULT_ERRORS,
    ErrorRule,
    ErrorTable,
    VendorError,
    default_extract,
    loads_json,
)

__all__ = ["QUICKBOOKS_ERRORS", "fault_of", "quickbooks_error"]

QUICKBOOKS_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        vendor_codes={
            "5010": ErrorRule(True, ErrorCode.ERP_STALE_OBJECT),
            "003001": ErrorRule(True, ErrorCode.HTTP_429),
            "3001": ErrorRule(True, ErrorCode.HTTP_429),
            "6240": ErrorRule(False, ErrorCode.ERP_DUPLICATE_NAME),
            "6140": ErrorRule(False, ErrorCode.ERP_DUPLICATE_DOCUMENT),
            "610": ErrorRule(False, ErrorCode.ERP_NOT_FOUND),
            "2500": ErrorRule(False, ErrorCode.ERP_UNKNOWN_REFERENCE),
            "3200": ErrorRule(False, ErrorCode.AUTH_REJECTED),
            "3100": ErrorRule(False, ErrorCode.AUTH_REJECTED),
        }
    )
)
"""The QuickBooks table: :data:`ledgerflow.core.outbound.client.DEFAULT_ERRORS` plus Intuit fault codes."""


def fault_of(body: object) -> VendorError | None:
    """The first error of an Intuit ``Fault`` body as ``VendorError`` (message + code), or None if no fault."""
    if not isinstance(body, dict):
        return None
    fault = body.get("Fault") or body.get("fault")
    if not isinstance(fault, dict):
        return None
    errors = fault.get("Error") or fault.get("error") or []
    if not errors or not isinstance(errors[0], dict):
        return VendorError(f"QuickBooks {fault.get('type', 'Fault')}")
    first = errors[0]
    parts = [str(first.get("Message") or ""), str(first.get("Detail") or "")]
    message = ": ".join(p for p in parts if p) or f"QuickBooks {fault.get('type', 'Fault')}"
    if first.get("element"):
        message += f" (element {first['element']})"
    code = first.get("code")
    return VendorError(message, str(code) if code is not None else None)


def quickbooks_error(response: httpx.Response) -> VendorError:
    """Extract the vendor message and code from a QuickBooks error response (Fault JSON, else generic)."""
    try:
        found = fault_of(loads_json(response.content))
    except ValueError:
        found = None
    return found if found is not None else default_extract(response)
