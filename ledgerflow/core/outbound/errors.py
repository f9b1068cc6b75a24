"""The errors of every outbound call (ERP APIs, source APIs, token endpoints): retriable or permanent.

A call that may succeed later (429, 5xx, timeouts, connection errors) raises
:class:`RetriableError` (with the server's ``Retry-After`` in seconds when it sent one); one that
will fail again unchanged (validation 4xx, rejected credentials) raises :class:`PermanentError`.
Both carry a stable :class:`~ledgerflow.contracts.errors.ErrorCode`, the server's message, the
HTTP status and the vendor's own error code. The connectors re-export them from
:mod:`ledgerflow.connectors.base` (where ``Unsupported`` and ``InvalidResponse`` subclass them).
"""

from __future__ import annotations

from typing import ClassVar

from ledgerflow.contracts.errors import ErrorCode

__all__ = ["ConnectorError", "PermanentError", "RetriableError"]


class ConnectorError(Exception):
    """Base of connector errors: a stable ``code``, the ERP's message, status and vendor code.

    ``code`` is an :class:`~ledgerflow.contracts.errors.ErrorCode` (a plain string is accepted
    only if it is one of its values).

    Raises:
        ValueError: ``code`` is not an ``ErrorCode`` value.
    """

    retriable: ClassVar[bool] = False

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        http_status: int | None = None,
        vendor_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.http_status = http_status
        self.vendor_code = vendor_code

    def __copy__(self) -> ConnectorError:
        """A copy with the same attributes (``copy.copy`` cannot call ``__init__`` with the original arguments)."""
        clone = type(self).__new__(type(self), *self.args)
        clone.__dict__.update(self.__dict__)
        return clone


class RetriableError(ConnectorError):
    """May succeed if tried again; ``retry_after`` (seconds) is the ERP's ``Retry-After`` if sent."""

    retriable: ClassVar[bool] = True

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        http_status: int | None = None,
        vendor_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, http_status=http_status, vendor_code=vendor_code)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Will fail again unchanged: bad data, unresolved reference, rejected credentials."""
