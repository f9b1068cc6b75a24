"""CloudEvents 1.0 attributes carried in Kafka headers (binary content mode).

Every ledgerflow message has ``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``,
``ce_time``, ``ce_subject``, ``content-type``, plus the extensions ``ce_tenant`` and
``traceparent`` (W3C Trace Context). Dead letters add ``ledgerflow_dlq_*`` headers. The header
names are in :mod:`ledgerflow.contracts.headers`. :func:`raw_event_attributes` is the context of
every raw event, whoever accepts it (the ingress for webhooks, the accessplanit poller for records
it reads from the source API).

The mapping follows the CloudEvents Kafka protocol binding (binary mode). It is written out here
rather than through the ``cloudevents`` SDK because its ``from_binary`` decodes the value
eagerly, and the ingress must hand the raw body bytes on untouched.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ledgerflow.contracts import headers as h

__all__ = [
    "EventAttributes",
    "MissingAttributeError",
    "deterministic_id",
    "inbound_event_attributes",
    "new_traceparent",
    "raw_event_attributes",
    "record_version_id",
    "valid_traceparent",
]

_REQUIRED = (h.CE_ID, h.CE_SOURCE, h.CE_TYPE, h.CE_TENANT)
_KNOWN = frozenset({h.CE_SPECVERSION, h.CE_ID, h.CE_SOURCE, h.CE_TYPE, h.CE_TIME, h.CE_SUBJECT, h.CE_TENANT})


class MissingAttributeError(ValueError):
    """A message lacks a required CloudEvents header (the message names it)."""


def deterministic_id(*parts: str | bytes) -> str:
    """Event id from content: SHA-256 over the parts, hex, 32 chars (a repeated delivery → same id)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def record_version_id(tenant: str, source: str, resource: str, record_id: str, version: str) -> str:
    """Event id of one version of one source record, whichever way it arrived.

    For sources that stamp each version of a record (accessplanit ``DateUpdated``), the webhook
    path (the ingress) and the batched path (the poller) both derive the raw event id from the
    tenant, source, resource, record id and that stamp, so a version seen by both is one event.
    """
    return deterministic_id(tenant, source, resource, record_id, version)


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def valid_traceparent(value: str | None) -> str | None:
    """``value`` when it is a W3C Trace Context ``traceparent`` a receiver may continue, else None.

    W3C Trace Context Level 1 §3.2: lower-case hex ``version-trace_id-parent_id-flags``; version
    ``ff``, an all-zero trace id or parent id are invalid; version ``00`` has exactly four fields
    (later versions may append more, which are kept).
    """
    if not value:
        return None
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return value


@dataclass(frozen=True, slots=True)
class EventAttributes:
    """The CloudEvents context of one message.

    ``source`` is a URI reference such as ``/tenants/acme/mercoa``; ``type`` is reverse-DNS,
    e.g. ``com.mercoa.invoice.created`` for raw events and ``io.ledgerflow.bill.v1`` for
    canonical ones; ``subject`` is the record id (source id or canonical id).
    """

    id: str
    source: str
    type: str
    tenant: str
    subject: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    content_type: str = "application/json"
    traceparent: str = field(default_factory=new_traceparent)
    extensions: Mapping[str, str] = field(default_factory=dict)

    def to_headers(self) -> dict[str, str]:
        """Kafka headers for this context (string values; FastStream encodes them)."""
        headers = {
            h.CE_SPECVERSION: "1.0",
            h.CE_ID: self.id,
            h.CE_SOURCE: self.source,
            h.CE_TYPE: self.type,
            h.CE_TIME: self.time.isoformat().replace("+00:00", "Z"),
            h.CE_TENANT: self.tenant,
            h.CONTENT_TYPE: self.content_type,
            h.TRACEPARENT: self.traceparent,
        }
        if self.subject is not None:
            headers[h.CE_SUBJECT] = self.subject
        for key, value in self.extensions.items():
            headers[f"{h.CE_PREFIX}{key}"] = value
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str | bytes]) -> EventAttributes:
        """Read the context back from Kafka headers.

        Raises:
            MissingAttributeError: when ``ce_id``, ``ce_source``, ``ce_type`` or ``ce_tenant`` is absent.

        """
        got = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in headers.items()}
        for name in _REQUIRED:
            if not got.get(name):
                raise MissingAttributeError(f"message has no {name} header")
        time_raw = got.get(h.CE_TIME)
        return cls(
            id=got[h.CE_ID],
            source=got[h.CE_SOURCE],
            type=got[h.CE_TYPE],
            tenant=got[h.CE_TENANT],
            subject=got.get(h.CE_SUBJECT),
            time=datetime.fromisoformat(time_raw) if time_raw else datetime.now(UTC),
            content_type=got.get(h.CONTENT_TYPE, "application/json"),
            traceparent=got.get(h.TRACEPARENT) or new_traceparent(),
            extensions={
                k.removeprefix(h.CE_PREFIX): v for k, v in got.items() if k.startswith(h.CE_PREFIX) and k not in _KNOWN
            },
        )

    def derive(self, *, id: str, type: str, subject: str | None, source: str | None = None) -> EventAttributes:
        """Context of a message produced from this one: same tenant, trace and acceptance time."""
        return replace(self, id=id, type=type, subject=subject, source=source or self.source)


def raw_event_attributes(
    *,
    id: str,
    tenant: str,
    source: str,
    event_type: str,
    record_id: str,
    extensions: Mapping[str, str] | None = None,
    traceparent: str | None = None,
) -> EventAttributes:
    """The context of a raw event on ``<prefix>.raw.<source>``: the one shape every raw event has.

    ``ce_source`` is ``/tenants/<tenant>/<source>``, ``ce_type`` ``io.ledgerflow.raw.<source>.<event_type>``
    (``event_type`` is the source's own, e.g. ``invoice.created``), ``ce_subject`` the source's
    record id (also the Kafka key). ``extensions`` become ``ce_<name>`` headers (e.g. ``sourceevent``).
    ``traceparent`` continues the sender's trace (the ingress passes the webhook's valid
    ``traceparent`` header, :func:`valid_traceparent`); without one the event starts a new trace.
    """
    return EventAttributes(
        id=id,
        source=f"/tenants/{tenant}/{source}",
        type=f"io.ledgerflow.raw.{source}.{event_type}",
        tenant=tenant,
        subject=record_id,
        traceparent=valid_traceparent(traceparent) or new_traceparent(),
        extensions=dict(extensions or {}),
    )


def inbound_event_attributes(
    *, id: str, tenant: str, erp: str, connection: str, kind: str, subject: str, time: datetime | None = None
) -> EventAttributes:
    """The context of a reference record read from an ERP, on ``<prefix>.inbound.<kind>.v1``.

    ``ce_source`` is ``/connections/<connection>/<erp>``, ``ce_type``
    ``io.ledgerflow.inbound.<kind>.v1``, ``ce_subject`` the record's key, and the extension
    ``ce_direction`` is ``inbound`` (:data:`~ledgerflow.contracts.headers.DIRECTION_INBOUND`), so
    no consumer mistakes it for a record to book. ``tenant`` is the tenant the connection serves
    (the connection name when several share it). ``time`` is when the ERP changed the record.
    """
    return EventAttributes(
        id=id,
        source=f"/connections/{connection}/{erp}",
        type=f"io.ledgerflow.inbound.{kind}.v1",
        tenant=tenant,
        subject=subject,
        time=time or datetime.now(UTC),
        extensions={h.CE_DIRECTION.removeprefix(h.CE_PREFIX): h.DIRECTION_INBOUND},
    )
