"""accessplanit API v2 webhooks: one URL per resource, the HTTP method is the action.

accessplanit's API v2 webhooks send "POST requests … when a new item is created", "PUT & PATCH
requests … when items are updated" and "DELETE requests … when items are deleted"
(``shared/reference/sources.md`` §5.2, "API v2 - Webhooks"). No signature is documented, so the
tenant's API key travels in a header (``config.header``, default ``X-API-Key``) or the URL
(``?token=``) and is compared in constant time against every configured key.

Routes: ``/webhooks/{tenant}/accessplanit/invoices`` and ``…/transactions``. The payload shape is
not published; the record id is read from the invoice/transaction id fields under the spellings
the API v2 feeds use ("Invoice ID", "Transaction ID" → ``InvoiceID``, ``InvoiceId``, ``Id``…),
at the top level or under ``data``. The event type is ``<resource>.<method lower>``.

When the record carries ``DateUpdated`` (the feeds' "Date Updated"), a POST, PUT or PATCH is one
version of the record: its event id is :func:`~ledgerflow.contracts.events.record_version_id` of
tenant, resource, record id and that stamp — the id the poller (``transformers/poller.py``) gives
the same version read from the feed, so a record seen by both paths is one event. A DELETE keeps
the id of its body.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ledgerflow.core.settings import SourceConfig
from ledgerflow.ingress.sources.base import (
    BadEnvelope,
    Envelope,
    SourceSpec,
    Unauthorized,
    WebhookRequest,
    any_secret_matches,
    as_record_id,
    require_object,
)

__all__ = ["DEFAULT_HEADER", "ID_FIELDS", "VERSION_FIELD", "AccessplanitSource"]

VERSION_FIELD = "DateUpdated"
"""The API v2 field stamping each version of an invoice or transaction (seed 004, "Date Updated")."""

DEFAULT_HEADER = "X-API-Key"
"""Header checked when the tenant's accessplanit source sets no ``header``."""

_GENERIC_IDS = ("Id", "id", "ID")
ID_FIELDS: dict[str, tuple[str, ...]] = {
    "invoices": ("InvoiceID", "InvoiceId", "invoiceId", "invoice_id", "Invoice ID", *_GENERIC_IDS),
    "transactions": (
        "TransactionID",
        "TransactionId",
        "transactionId",
        "transaction_id",
        "Transaction ID",
        *_GENERIC_IDS,
    ),
}
"""Accepted record id fields per resource, in order of preference."""


def _find_id(container: dict[str, Any], fields: tuple[str, ...]) -> tuple[str, Any] | None:
    for field in fields:
        if container.get(field) is not None:
            return field, container[field]
    return None


class AccessplanitSource(SourceSpec):
    """accessplanit (``/webhooks/{tenant}/accessplanit/{invoices|transactions}``, POST/PUT/PATCH/DELETE)."""

    name: ClassVar[str] = "accessplanit"
    objects: ClassVar[frozenset[str] | None] = frozenset(ID_FIELDS)
    methods: ClassVar[frozenset[str]] = frozenset({"POST", "PUT", "PATCH", "DELETE"})
    credential_headers: ClassVar[tuple[str, ...]] = (DEFAULT_HEADER,)
    credential_query: ClassVar[tuple[str, ...]] = ("token",)

    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Accept the request when its API key (header, else ``?token=``) matches a configured key.

        Raises:
            Unauthorized: no key presented, or it matches none.
        """
        header = config.header or DEFAULT_HEADER
        presented = request.headers.get(header.lower()) or request.query.get("token")
        if not presented:
            raise Unauthorized(f"no accessplanit API key: send the {header} header or ?token=")
        if not any_secret_matches(presented, config.all_secrets()):
            raise Unauthorized("the accessplanit API key does not match any key configured for this tenant")

    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """``<resource>.<method>`` (``invoices.post``) for the invoice or transaction id in the payload.

        Raises:
            BadEnvelope: not an object, or no id under any accepted spelling (see :data:`ID_FIELDS`).
        """
        body = require_object(payload, "accessplanit")
        resource = request.object or ""
        fields = ID_FIELDS.get(resource, _GENERIC_IDS)
        found = _find_id(body, fields)
        if found is None and isinstance(body.get("data"), dict):
            found = _find_id(body["data"], fields)
        if found is None:
            raise BadEnvelope(f"an accessplanit {resource} webhook needs one of: {', '.join(fields)}")
        field, value = found
        holder = body if found == _find_id(body, fields) else body["data"]
        stamp = holder.get(VERSION_FIELD)
        version = str(stamp) if isinstance(stamp, str | int) and request.method != "DELETE" and str(stamp) else None
        return Envelope(
            event_type=f"{resource}.{request.method.lower()}",
            record_id=as_record_id(value, field),
            version=version,
        )
