"""accessplanit poller: read the API v2 feeds for tenants without webhooks and publish like the ingress.

accessplanit documents two patterns per finance process, webhooks or "Batched — generating a
request to view recently generated invoices" (seed 004 l.24–27). The v2 feeds take OData-style
``$filter``, ``$orderby``, ``$top`` and ``$skip`` (``sources.md`` §5.1). For each tenant and
resource (``invoices``, ``transactions``) the poller asks for records with
``DateUpdated ge <cursor>`` in ascending order, page by page, and publishes each to
``ledgerflow.raw.accessplanit`` with the same key, body and CloudEvents headers the ingress
gives a webhook (``ce_sourceevent``, ``ce_object``, ``ce_method``), and the same event id:
:func:`~ledgerflow.contracts.events.record_version_id` of tenant, resource, record id and
``DateUpdated`` (the ingress derives a webhook's id the same way), so a version seen by both the
webhook and the poller is one event, booked once.

The cursor (one per tenant and resource in :class:`~ledgerflow.core.state.StateStore`) is the
newest ``DateUpdated`` published plus the ids already published at exactly that stamp; it advances
after each record the broker acknowledged. ``ge`` rather than ``gt`` so records sharing the
cursor's stamp are not lost; the ids in the cursor keep them from being published twice. A crash
between an acknowledgement and the cursor write re-publishes that one record with the same event
id, which later stages drop.

A failed round (the feed still failing after the client's bounded retries, which honour
``Retry-After`` on 429/5xx, or the broker not acknowledging) is retried after a backoff that
doubles up to ``max_backoff`` seconds; metrics ``ledgerflow_poller_records_total``,
``ledgerflow_poller_polls_total`` and ``ledgerflow_poller_last_success_timestamp_seconds``.

The v2 paths and auth header are not in the public material (§5.1 "not captured"): paths
default to ``/invoices`` and ``/transactions`` and the key goes in ``X-API-Key`` (the header
the ingress accepts), all configurable in the tenant's ``accessplanit.options``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
import orjson
from faststream.kafka import KafkaBroker

from ledgerflow.contracts.events import deterministic_id, raw_event_attributes, record_version_id
from ledgerflow.contracts.topics import Topics
from ledgerflow.core import metrics
from ledgerflow.core.outbound.json_api import EnrichmentError, JsonApiClient
from ledgerflow.core.settings import Routing
from ledgerflow.core.state import StateStore

__all__ = [
    "AccessplanitFeed",
    "AccessplanitPoller",
    "Cursor",
    "FeedResource",
    "KafkaRawPublisher",
    "RawPublisher",
    "normalise_since",
    "pollers_from_routing",
]

log = logging.getLogger(__name__)

SOURCE = "accessplanit"


class RawPublisher(Protocol):
    """Writes one raw record and returns once the broker acknowledged it."""

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write ``value`` under ``key`` with ``headers``; raise if not acknowledged."""


class KafkaRawPublisher:
    """:class:`RawPublisher` over a connected FastStream ``KafkaBroker`` (its producer uses ``acks=all``).

    ``broker.publish`` returns once the broker acknowledged the write, or raises.
    """

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Publish and wait for the acknowledgement (see :class:`RawPublisher`)."""
        await self.broker.publish(value, topic=topic, key=key, headers=headers)


@dataclass(frozen=True, slots=True)
class FeedResource:
    """One API v2 feed: its path, the id field of its records and the field the cursor follows."""

    name: str
    path: str
    id_field: str
    cursor_field: str = "DateUpdated"


DEFAULT_RESOURCES = (
    FeedResource("invoices", "/invoices", "InvoiceID"),
    FeedResource("transactions", "/transactions", "TransactionID"),
)


@dataclass(slots=True)
class Cursor:
    """Where a feed was read up to: the newest stamp published and the ids published at exactly it."""

    at: str | None = None
    seen: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, stored: str | None) -> Cursor:
        """Read a stored cursor: ``{"at": …, "seen": […]}``, or a bare stamp (cursors written before the ids)."""
        if not stored:
            return cls()
        try:
            value = orjson.loads(stored)
        except orjson.JSONDecodeError:
            return cls(at=stored)
        if not isinstance(value, dict):
            return cls(at=stored)
        return cls(at=value.get("at"), seen={str(i) for i in value.get("seen", [])})

    def dump(self) -> str:
        """The stored form (JSON, ids sorted)."""
        return orjson.dumps({"at": self.at, "seen": sorted(self.seen)}).decode()

    def advance(self, stamp: str, record_id: str) -> None:
        """Record that the version of ``record_id`` stamped ``stamp`` was published."""
        if self.at is None or stamp > self.at:
            self.at, self.seen = stamp, {record_id}
        elif stamp == self.at:
            self.seen.add(record_id)


def normalise_since(value: str) -> str:
    """A ``--since`` date or timestamp as the feed's stamp format (``2024-05-01`` → ``2024-05-01T00:00:00``).

    Raises:
        ValueError: not an ISO 8601 date or timestamp.
    """
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=None).isoformat(timespec="seconds")


class AccessplanitFeed(JsonApiClient):
    """GET pages of an accessplanit API v2 feed (bounded retries on 429/5xx like the enrichment clients).

    Args:
        api_key: the API key of an API user.
        header: header carrying it (``Authorization`` gets a ``Bearer`` prefix).

    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str, *, header: str = "X-API-Key", **kw: Any):
        super().__init__(http, base_url, name="accessplanit", **kw)
        self._key = api_key
        self.header = header

    async def _headers(self) -> dict[str, str]:
        value = f"Bearer {self._key}" if self.header.lower() == "authorization" else self._key
        return {"Accept": "application/json", self.header: value}

    async def page(self, resource: FeedResource, since: str | None, *, top: int, skip: int) -> list[dict[str, Any]]:
        """One page of ``resource`` changed at or after ``since`` (all when None), oldest first.

        Returns the records of an OData ``{"value": [...]}`` answer or of a bare JSON list.

        Raises:
            ledgerflow.core.outbound.json_api.EnrichmentError: the feed could not be read.

        """
        params = {"$orderby": f"{resource.cursor_field} asc", "$top": str(top), "$skip": str(skip)}
        if since:
            params["$filter"] = f"{resource.cursor_field} ge {since}"
        query = httpx.QueryParams(params)
        body = await self.request("GET", f"{resource.path}?{query}")
        items = body.get("value", body.get("data")) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise EnrichmentError(f"accessplanit GET {resource.path}: answer is neither a list nor {{value: [...]}}")
        return [item for item in items if isinstance(item, dict)]


class AccessplanitPoller:
    """Polls one tenant's feeds and publishes new or changed records as raw events.

    Args:
        tenant: the ledgerflow tenant.
        feed: the tenant's feed client.
        publisher: acknowledged writes to Kafka.
        state: where the cursors live (``accessplanit:<tenant>:<resource>``).
        topics: topic names (prefix).
        page_size: ``$top``; ``max_pages`` bounds one poll per resource.

    """

    def __init__(
        self,
        tenant: str,
        feed: AccessplanitFeed,
        publisher: RawPublisher,
        state: StateStore,
        topics: Topics,
        *,
        resources: tuple[FeedResource, ...] = DEFAULT_RESOURCES,
        page_size: int = 100,
        max_pages: int = 50,
    ) -> None:
        self.tenant = tenant
        self.feed = feed
        self.publisher = publisher
        self.state = state
        self.topics = topics
        self.resources = resources
        self.page_size = page_size
        self.max_pages = max_pages

    def cursor_name(self, resource: FeedResource) -> str:
        """The state-store cursor name of ``resource`` for this tenant."""
        return f"{SOURCE}:{self.tenant}:{resource.name}"

    def raw_message(self, resource: FeedResource, record: Mapping[str, Any]) -> tuple[bytes, bytes, dict[str, str]]:
        """Key, body and headers exactly as the ingress publishes an accessplanit webhook.

        The method is ``POST`` for a record never updated since generation, else ``PUT``; the event
        id is that of the record's version (see the module docstring), as the ingress gives it.

        Raises:
            KeyError: the record has no id field.

        """
        record_id = str(record[resource.id_field])
        body = orjson.dumps(record)
        method = "POST" if record.get("DateUpdated") in (None, record.get("DateGenerated")) else "PUT"
        event_type = f"{resource.name}.{method.lower()}"
        stamp = record.get(resource.cursor_field)
        event_id = (
            record_version_id(self.tenant, SOURCE, resource.name, record_id, str(stamp))
            if isinstance(stamp, str | int) and str(stamp)
            else deterministic_id(self.tenant, SOURCE, resource.name, body)
        )
        attrs = raw_event_attributes(
            id=event_id,
            tenant=self.tenant,
            source=SOURCE,
            event_type=event_type,
            record_id=record_id,
            extensions={"sourceevent": event_type, "method": method, "object": resource.name},
        )
        return record_id.encode(), body, attrs.to_headers()

    async def backfill_from(self, since: str) -> None:
        """Set every resource's cursor to ``since`` (a feed stamp): the next poll re-reads from there."""
        for resource in self.resources:
            await self.state.put_cursor(self.cursor_name(resource), Cursor(at=since).dump())

    async def poll_resource(self, resource: FeedResource) -> int:
        """Publish every record of ``resource`` changed since its cursor; return how many.

        Raises:
            ledgerflow.core.outbound.json_api.EnrichmentError: the feed could not be read (the cursor
                stays after the last acknowledged record).
            Exception: the publisher's error when the broker did not acknowledge (same).

        """
        name = self.cursor_name(resource)
        cursor = Cursor.parse(await self.state.get_cursor(name))
        since = cursor.at
        topic = self.topics.raw(SOURCE)
        published = 0
        for page_number in range(self.max_pages):
            records = await self.feed.page(resource, since, top=self.page_size, skip=page_number * self.page_size)
            for record in records:
                if record.get(resource.id_field) is None:
                    log.warning("accessplanit %s record without %s skipped", resource.name, resource.id_field)
                    continue
                record_id = str(record[resource.id_field])
                stamp = record.get(resource.cursor_field)
                stamp_text = str(stamp) if stamp is not None else None
                if stamp_text is not None and stamp_text == cursor.at and record_id in cursor.seen:
                    continue  # this version was published before the cursor's last write
                key, body, headers = self.raw_message(resource, record)
                await self.publisher.publish(topic, key, body, headers)
                published += 1
                metrics.POLLED_RECORDS.labels(SOURCE, self.tenant, resource.name).inc()
                if stamp_text is not None:
                    cursor.advance(stamp_text, record_id)
                    await self.state.put_cursor(name, cursor.dump())
            if len(records) < self.page_size:
                break
        return published

    async def poll_once(self) -> int:
        """Poll every resource once; return the number of records published."""
        return sum([await self.poll_resource(resource) for resource in self.resources])

    async def run(self, interval: float, stop: asyncio.Event, *, max_backoff: float = 900.0) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set.

        A failed round is logged, counted and retried after ``interval`` × 2^(failures in a row),
        at most ``max_backoff`` seconds (the feed client already retried 429/5xx within the round).
        """
        failures = 0
        while not stop.is_set():
            try:
                count = await self.poll_once()
            except Exception:
                failures += 1
                metrics.POLLS.labels(SOURCE, self.tenant, "failed").inc()
                log.exception("accessplanit poll for %s failed (%d in a row)", self.tenant, failures)
            else:
                failures = 0
                metrics.POLLS.labels(SOURCE, self.tenant, "ok").inc()
                metrics.POLLER_LAST_SUCCESS.labels(SOURCE, self.tenant).set(time.time())
                log.info("accessplanit poll for %s published %d records", self.tenant, count)
            delay = min(interval * 2**failures, max(max_backoff, interval)) if failures else interval
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                continue


def pollers_from_routing(
    routing: Routing, http: httpx.AsyncClient, publisher: RawPublisher, state: StateStore, topics: Topics
) -> list[AccessplanitPoller]:
    """One poller per tenant whose ``accessplanit.options`` set ``poll: true``, ``api_base_url`` and ``api_key``.

    Optional options: ``api_key_header``, ``page_size``, ``invoices_path``, ``transactions_path``.
    """
    pollers: list[AccessplanitPoller] = []
    for tenant, config in routing.tenants.items():
        src = config.sources.get(SOURCE)
        if src is None or not src.options.get("poll"):
            continue
        opts = src.options
        if not opts.get("api_base_url") or not opts.get("api_key"):
            continue
        feed = AccessplanitFeed(
            http, str(opts["api_base_url"]), str(opts["api_key"]), header=str(opts.get("api_key_header", "X-API-Key"))
        )
        resources = tuple(
            FeedResource(r.name, str(opts.get(f"{r.name}_path", r.path)), r.id_field, r.cursor_field)
            for r in DEFAULT_RESOURCES
        )
        pollers.append(
            AccessplanitPoller(
                tenant, feed, publisher, state, topics, resources=resources, page_size=int(opts.get("page_size", 100))
            )
        )
    return pollers
