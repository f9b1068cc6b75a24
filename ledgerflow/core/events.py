"""CloudEvents 1.0 attributes carried in Kafka headers (binary content mode).

Every ledgerflow message has ``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``,
``ce_time``, ``ce_subject``, ``content-type``, plus the extensions ``ce_tenant`` and
``traceparent`` (W3C Trace Context). Dead letters add ``ledgerflow_error_*`` headers.

The mapping follows the CloudEvents Kafka protocol binding (binary mode). It is written out here
rather than through the ``cloudevents`` SDK because its ``from_binary`` decodes the value
eagerly, and the ingress must hand the raw body bytes on untouched.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

__all__ = ["EventAttributes", "MissingAttributeError", "deterministic_id", "new_traceparent", "record_version_id"]

_REQUIRED = ("ce_id", "ce_source", "ce_type")


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
            "ce_specversion": "1.0",
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": self.time.isoformat().replace("+00:00", "Z"),
            "ce_tenant": self.tenant,
            "content-type": self.content_type,
            "traceparent": self.traceparent,
        }
        if self.subject is not None:
            headers["ce_subject"] = self.subject
        for key, value in self.extensions.items():
            headers[f"ce_{key}"] = value
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str | bytes]) -> EventAttributes:
        """Read the context back from Kafka headers.

        Raises:
            MissingAttributeError: when ``ce_id``, ``ce_source``, ``ce_type`` or ``ce_tenant`` is absent.

        """
        h = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in headers.items()}
        for name in (*_REQUIRED, "ce_tenant"):
            if not h.get(name):
                raise MissingAttributeError(f"message has no {name} header")
        known = {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_tenant"}
        time_raw = h.get("ce_time")
        return cls(
            id=h["ce_id"],
            source=h["ce_source"],
            type=h["ce_type"],
            tenant=h["ce_tenant"],
            subject=h.get("ce_subject"),
            time=datetime.fromisoformat(time_raw) if time_raw else datetime.now(UTC),
            content_type=h.get("content-type", "application/json"),
            traceparent=h.get("traceparent") or new_traceparent(),
            extensions={k[3:]: v for k, v in h.items() if k.startswith("ce_") and k not in known},
        )

    def derive(self, *, id: str, type: str, subject: str | None, source: str | None = None) -> EventAttributes:
        """Context of a message produced from this one: same tenant, trace and acceptance time."""
        return replace(self, id=id, type=type, subject=subject, source=source or self.source)
