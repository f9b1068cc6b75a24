"""Shared helpers for the transformer tests: building RawEvents and running routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ledgerflow.contracts import CanonicalRecord
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.transformers.base import RawEvent
from ledgerflow.transformers.registry import ROUTERS


def raw_event(
    source: str,
    event_type: str,
    payload: Any,
    *,
    tenant: str = "acme",
    object_hint: str | None = None,
    method: str = "POST",
    enrichment: dict[str, Any] | None = None,
) -> RawEvent:
    body = orjson.dumps(payload)
    attrs = EventAttributes(
        id="evt-test", source=f"/tenants/{tenant}/{source}", type=f"io.ledgerflow.raw.{source}", tenant=tenant
    )
    return RawEvent(
        tenant=tenant,
        source=source,
        event_type=event_type,
        payload=payload,
        body=body,
        attributes=attrs,
        object_hint=object_hint,
        method=method,
        enrichment=enrichment or {},
    )


def map_event(event: RawEvent) -> Sequence[CanonicalRecord]:
    """Route and map (no enrichment: the event carries what enrichment would have fetched)."""
    route = ROUTERS[event.source](event)
    records = route.mapper(event)
    assert records, "a mapper returned no records"
    assert any(r.object_type == route.object_type for r in records), "no record of the route's primary object type"
    return records
