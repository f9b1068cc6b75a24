"""Xero error classification: HTTP status and Xero exception types → retriable or permanent.

Facts (``shared/reference/erp_apis.md`` §2.3, ``xero_accounting.yaml`` ``components.schemas.Error``,
developer.xero.com "HTTP response codes" and "OAuth 2.0 limits"): errors are
``{"ErrorNumber", "Type", "Message", "Elements": [{…, "ValidationErrors": [{"Message"}]}]}``;
``ValidationException`` (ErrorNumber 10) is a bad document (unknown account code, missing
contact…); ``ObjectNotFoundException`` a 404; 429 carries ``Retry-After`` and
``X-Rate-Limit-Problem`` (``minute``, ``concurrent``, ``daily``, ``appminute``); 401/403 come as
problem JSON (``{"Title": "Unauthorized", "Detail": "AuthenticationUnsuccessful"}``).

Vendor codes in the table are the exception ``Type``. Override per connection with
``options.error_overrides`` (see :meth:`ledgerflow.core.outbound.client.ErrorTable.with_overrides`).
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

__all__ = ["XERO_ERRORS", "xero_error"]

XERO_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        vendor_codes={
            "ValidationException": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "PostDataInvalidException": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "QueryParseException": ErrorRule(False, ErrorCode.ERP_VALIDATION),
            "ObjectNotFoundException": ErrorRule(False, ErrorCode.ERP_NOT_FOUND),
            "OrganisationOfflineException": ErrorRule(True, ErrorCode.ERP_UNAVAILABLE),
            "RateLimitExceeded": ErrorRule(True, ErrorCode.HTTP_429),
        }
    )
)
"""The Xero table: :data:`ledgerflow.core.outbound.client.DEFAULT_ERRORS` plus Xero exception types."""


def xero_error(response: httpx.Response) -> VendorError:
    """Extract message and exception type from a Xero error response.

    Validation messages of every element are joined with ``; ``; for 429 the
    ``X-Rate-Limit-Problem`` header is named in the message.
    """
    try:
        body = loads_json(response.content)
    except ValueError:
        body = None
    if response.status_code == 429:
        problem = response.headers.get("X-Rate-Limit-Problem", "unknown")
        return VendorError(f"Xero rate limit exceeded (X-Rate-Limit-Problem: {problem})", "RateLimitExceeded")
    if isinstance(body, dict) and ("ErrorNumber" in body or "Elements" in body):
        messages: list[str] = []
        for element in body.get("Elements") or []:
            if isinstance(element, dict):
                for item in element.get("ValidationErrors") or []:
                    if isinstance(item, dict) and item.get("Message"):
                        messages.append(str(item["Message"]))
        text = "; ".join(messages) or str(body.get("Message") or "Xero error")
        kind = body.get("Type")
        return VendorError(text, str(kind) if kind else None)
    if isinstance(body, dict) and body.get("Detail"):
        return VendorError(f"{body.get('Title') or 'Error'}: {body['Detail']}")
    return default_extract(response)
