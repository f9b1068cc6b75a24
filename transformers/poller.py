"""accessplanit poller: read the API v2 feeds for tenants without webhooks and publish like the ingress.

accessplanit documents two patterns per finance process, webhooks or "Batched — generating a
request to view recently generated invoices" (seed 004 l.24–27). The v2 feeds take OData-style
``$filter``, ``$orderby``, ``$top`` and ``$skip`` (``sources.md`` §5.1). For each tenant and
resource (``invoices``, ``transactions``) the poller asks for records with
``DateUpdated ge <cursor>`` in ascending order, page by page, and publishes each to
``ledgerflow.raw.accessplanit`` with the same key, body and CloudEvents headers the ingress
gives a webhook (``ce_sourceevent``, ``ce_object``, ``ce_method``; deterministic ``ce_id`` from
tenant, source, resource and body, as ``ingress/app.py`` computes it). The cursor in
:class:`~ledgerflow.core.state.StateStore` advances only after the broker acknowledged a page.

``ge`` rather than ``gt``: records sharing the cursor's timestamp are read again rather than
lost; re-published bodies get the same deterministic id, so later stages drop them.

The v2 paths and auth header are not in the public material (§5.1 "not captured"): paths
default to ``/invoices`` and ``/transactions`` and the key goes in ``X-API-Key`` (the header
the ingress accepts), all configurable in the tenant's ``accessplanit.options``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from faststream.kafka import KafkaBroker

from ledgerflow.core.events import EventAttributes, deterministic_id
from ledgerflow.core.settings import Routing
from ledgerflow.core.state import StateStore
from ledgerflow.core.topics import Topics
from ledgerflow.transformers.enrichment import EnrichmentError, JsonApiClient

__all__ = [
    "AccessplanitFeed",
    "AccessplanitPoller",
    "FeedResource",
    "KafkaRawPublisher",
    "RawPublisher",
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
            ledgerflow.transformers.enrichment.EnrichmentError: the feed could not be read.

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

        The method is ``POST`` for a record never updated since generation, else ``PUT``.

        Raises:
            KeyError: the record has no id field.

        """
        record_id = str(record[resource.id_field])
        body = orjson.dumps(record)
        method = "POST" if record.get("DateUpdated") in (None, record.get("DateGenerated")) else "PUT"
        event_type = f"{resource.name}.{method.lower()}"
        attrs = EventAttributes(
            id=deterministic_id(self.tenant, SOURCE, resource.name, body),
            source=f"/tenants/{self.tenant}/{SOURCE}",
            type=f"io.ledgerflow.raw.{SOURCE}.{event_type}",
            tenant=self.tenant,
            subject=record_id,
            extensions={"sourceevent": event_type, "method": method, "object": resource.name},
        )
        return record_id.encode(), body, attrs.to_headers()

    async def poll_resource(self, resource: FeedResource) -> int:
        """Publish every record of ``resource`` changed since its cursor; return how many.

        Raises:
            ledgerflow.transformers.enrichment.EnrichmentError: the feed could not be read (cursor unchanged).
            Exception: the publisher's error when the broker did not acknowledge (cursor unchanged
                for that page).

        """
        name = self.cursor_name(resource)
        since = await self.state.get_cursor(name)
        published = 0
        for page_number in range(self.max_pages):
            records = await self.feed.page(resource, since, top=self.page_size, skip=page_number * self.page_size)
            newest: str | None = None
            for record in records:
                if record.get(resource.id_field) is None:
                    log.warning("accessplanit %s record without %s skipped", resource.name, resource.id_field)
                    continue
                key, body, headers = self.raw_message(resource, record)
                await self.publisher.publish(self.topics.raw(SOURCE), key, body, headers)
                published += 1
                stamp = record.get(resource.cursor_field)
                if stamp is not None and (newest is None or str(stamp) > newest):
                    newest = str(stamp)
            if newest is not None:
                await self.state.put_cursor(name, newest)
            if len(records) < self.page_size:
                break
        return published

    async def poll_once(self) -> int:
        """Poll every resource once; return the number of records published."""
        return sum([await self.poll_resource(resource) for resource in self.resources])

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; a failed poll is logged and retried next round."""
        while not stop.is_set():
            try:
                count = await self.poll_once()
                log.info("accessplanit poll for %s published %d records", self.tenant, count)
            except Exception:
                log.exception("accessplanit poll for %s failed", self.tenant)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
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
