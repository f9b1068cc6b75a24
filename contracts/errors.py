"""The stable error codes of a failed or skipped ``SyncResult`` (``error.code``): one list for every connector.

Codes are ``<family>.<what>``. The family says where the problem is:

* ``object.*`` / ``record.*`` / ``payment.*``: the connector runtime decided not to book (a ``skipped`` result);
* ``config.*`` / ``auth.*``: the connection's configuration or credentials;
* ``reference.*``: ledgerflow could not resolve a reference of the record to an ERP id
  (before anything was sent);
* ``erp.*``: the ERP answered and refused (the vendor's own code is ``error.vendor_code``);
* ``source.*``: a source system refused a write of the source writers (inbound results);
* ``http.*``: transport failures and HTTP statuses with no more specific meaning.

Whether a retry may help is carried separately (``error.retriable``); a code does not imply it.
The wire values are stable (dashboards, alert rules and the sync-records API filter on them).
To add a code: one member here, with a docstring saying when it is raised.

Renamed in this list (the older per-ERP spellings are not produced any more):
``sap.not_found``/``netsuite.not_found``/``coupa.not_found`` → ``erp.not_found``;
``sap.conflict``/``netsuite.conflict``/``coupa.conflict`` → ``erp.conflict``;
``sap.locked``/``netsuite.record_locked`` → ``erp.locked``; ``sap.etag_mismatch`` →
``erp.stale_object``; ``coupa.invalid_state`` → ``erp.invalid_state``; ``coupa.not_acceptable``
→ ``erp.not_acceptable``; ``sap.update_unsupported`` → ``erp.unsupported_action``;
``sap.csrf`` → ``auth.csrf``; ``erp.response`` → ``erp.protocol``; a reference ledgerflow
cannot resolve is ``reference.unresolved`` in every connector (SAP, NetSuite and Coupa said
``erp.unknown_reference``, which now means only that the ERP rejected an id it was sent).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorCode"]


class ErrorCode(StrEnum):
    """Every ``SyncResult.error.code`` (and ``ConnectorError.code``) ledgerflow produces."""

    # The runtime's own decisions (skipped results)
    OBJECT_UNSUPPORTED = "object.unsupported"
    """The connection is not configured for the object type, or the ERP connector does not support it."""
    RECORD_NOT_APPROVED = "record.not_approved"
    """The document is draft/submitted in the source and the connection books approved records only."""
    RECORD_SUPERSEDED = "record.superseded"
    """A newer version of the record was already booked: its ``source_updated_at`` is older than the
    booked one's, or a newer version was booked while this one waited on a retry tier."""
    RECORD_NOT_BOOKED = "record.not_booked"
    """A void/delete of a record never booked on this connection."""
    PAYMENT_KIND_UNSUPPORTED = "payment.kind_unsupported"
    """The payment's kind (e.g. a refund) is not one the connector books as money received."""
    PAYMENT_NOT_SETTLED = "payment.not_settled"
    """The payment is pending (or failed) in the source: money has not moved, so nothing is booked."""

    # Configuration and credentials
    CONFIG_BASE_URL = "config.base_url"
    """The connection has no ``base_url``."""
    CONFIG_REFERENCE_MAP = "config.reference_map"
    """The connection's reference map (canonical references → ERP ids) is invalid or does not cover the record."""
    CONFIG_MISSING = "config.missing"
    """The record needs a connection option that is not set (e.g. a tax code for tax-inclusive amounts)."""
    CONFIG_INVALID = "config.invalid"
    """The connection's ``options`` or ``credentials`` do not validate (unknown key, wrong type)."""
    AUTH_CONFIG = "auth.config"
    """A credential the ERP needs is missing or empty."""
    AUTH_REJECTED = "auth.rejected"
    """The ERP or its token endpoint rejected the credentials (401/403, ``invalid_client``)."""
    AUTH_REFRESH_REJECTED = "auth.refresh_rejected"
    """The OAuth refresh token was rejected (revoked or expired): the connection must be authorised again."""
    AUTH_FORBIDDEN = "auth.forbidden"
    """Authenticated, but the user or role may not do this."""
    AUTH_CSRF = "auth.csrf"
    """SAP: the service answered the CSRF-token fetch without a token."""

    # References ledgerflow resolves before sending
    REFERENCE_UNRESOLVED = "reference.unresolved"
    """A vendor, customer, GL account, item… has no ERP id and no default option covers it."""
    REFERENCE_AMBIGUOUS = "reference.ambiguous"
    """A name lookup found several ERP records."""
    REFERENCE_PENDING = "reference.pending"
    """The referenced record is not booked yet (retriable: it usually is moments later)."""
    REFERENCE_UNKNOWN = "reference.unknown"
    """A GL account, tax rate, tracking value or vendor the record names is not in the connection's
    reference cache (or is inactive there), and that cache holds a complete pass of the ERP's list:
    refused before any ERP call; the message names every missing code, its kind and when the
    cache was synced (``connectors/preflight.py``, option ``reference_check``)."""

    # The ERP answered and refused
    ERP_VALIDATION = "erp.validation"
    """The ERP rejected the content (a 4xx with no more specific code)."""
    ERP_UNKNOWN_REFERENCE = "erp.unknown_reference"
    """The ERP rejected an id it was sent (no such vendor, account, item…)."""
    ERP_NOT_FOUND = "erp.not_found"
    """The ERP record to update or void does not exist (any more)."""
    ERP_DUPLICATE = "erp.duplicate"
    """The ERP already has this record (its duplicate check)."""
    ERP_DUPLICATE_NAME = "erp.duplicate_name"
    """The ERP already has a record with that name."""
    ERP_DUPLICATE_DOCUMENT = "erp.duplicate_document"
    """The ERP already has a document with that number for that party."""
    ERP_CONFLICT = "erp.conflict"
    """The ERP reported a conflicting concurrent change (409)."""
    ERP_STALE_OBJECT = "erp.stale_object"
    """The version sent is not the ERP's current one (SyncToken, ETag)."""
    ERP_LOCKED = "erp.locked"
    """The ERP record is locked by another user or process."""
    ERP_IMMUTABLE = "erp.immutable"
    """The ERP record can no longer be changed (posted, paid, closed period)."""
    ERP_INVALID_STATE = "erp.invalid_state"
    """The ERP record's state does not allow the operation."""
    ERP_NOT_ACCEPTABLE = "erp.not_acceptable"
    """The ERP cannot answer in the requested representation (406)."""
    ERP_UNAVAILABLE = "erp.unavailable"
    """The ERP said it is unavailable (maintenance, throttled tenant)."""
    ERP_INVALID_RESPONSE = "erp.invalid_response"
    """The ERP answered 2xx with a body that is not what it documents (HTML, truncated JSON, no record id):
    retried a few times, then dead-lettered."""
    ERP_PROTOCOL = "erp.protocol"
    """A read-back answer is not what the ERP's API documents (a booking's own answer without an id or
    of the wrong shape is ``erp.invalid_response``)."""
    ERP_NOTHING_TO_VOID = "erp.nothing_to_void"
    """A void/delete found nothing to void in the ERP."""
    ERP_UNSUPPORTED_OBJECT = "erp.unsupported_object"
    """The ERP connector does not book this object type."""
    ERP_UNSUPPORTED_ACTION = "erp.unsupported_action"
    """The ERP connector cannot perform this action (e.g. update) on this object type."""
    ERP_UNSUPPORTED_AMOUNT = "erp.unsupported_amount"
    """An amount the ERP cannot hold exactly (e.g. finer than its decimals): refused rather than rounded."""
    ERP_MISMATCH = "erp.mismatch"
    """Read back after booking, the ERP record differs from the canonical document (totals, lines, dates)."""
    ERP_RETRIABLE = "erp.retriable"
    """A vendor error an ``error_overrides`` option made retriable."""

    # Source writers (inbound: records read from an ERP written into a source)
    SOURCE_VALIDATION = "source.validation"
    """The source API refused the write as invalid (4xx other than 404/409/429)."""
    SOURCE_NOT_FOUND = "source.not_found"
    """The source document a payment points at does not exist in the source (404)."""
    SOURCE_INVALID_STATE = "source.invalid_state"
    """The source document cannot take the change in its state (Monite 409 "Payable couldn't be updated due to
    current state", a Mercoa invoice not payable)."""
    SOURCE_PARTIAL_PAYMENT = "source.partial_payment"
    """The payment covers part of the document and the source has no partially paid state (Mercoa)."""
    SOURCE_ORIGIN = "source.origin"
    """The ERP record came from this source (ledgerflow booked it into the ERP): it is not written back there."""
    SOURCE_UNAVAILABLE = "source.unavailable"
    """The source API kept failing transiently (429, 5xx, transport) after the retries."""

    # Transport and HTTP statuses
    HTTP_TIMEOUT = "http.timeout"
    """The request timed out."""
    HTTP_TRANSPORT = "http.transport"
    """The connection failed (refused, reset, TLS)."""
    HTTP_TEMPLATE = "http.template"
    """The generic HTTP connector's body template failed to render."""
    HTTP_408 = "http.408"
    HTTP_423 = "http.423"
    HTTP_425 = "http.425"
    HTTP_429 = "http.429"
    """Rate limited (``Retry-After`` honoured)."""
    HTTP_5XX = "http.5xx"
    """The ERP answered with a server error."""
