"""Status → retriable / permanent for the generic HTTP connector (an ``ErrorTable`` of ledgerflow.core.outbound.client).

A custom endpoint has no vendor error codes, so only HTTP semantics (RFC 9110) decide: on top of
:data:`ledgerflow.core.outbound.client.DEFAULT_ERRORS` (408, 429, 5xx retriable; 401/403 ``auth.rejected``; other
4xx ``erp.validation``), 423 Locked and 425 Too Early are retriable and 409 Conflict is a
permanent ``erp.conflict``. ``config.options["error_overrides"]`` (``{"http.<status>":
"retriable" | "permanent"}``) changes any of them per connection.
"""

from __future__ import annotations

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import DEFAULT_ERRORS, ErrorRule, ErrorTable

__all__ = ["WEBHOOK_ERRORS"]

WEBHOOK_ERRORS = DEFAULT_ERRORS.merged(
    ErrorTable(
        statuses={
            409: ErrorRule(False, ErrorCode.ERP_CONFLICT),
            423: ErrorRule(True, ErrorCode.HTTP_423),
            425: ErrorRule(True, ErrorCode.HTTP_425),
        }
    )
)
"""The generic HTTP connector's classification table."""
