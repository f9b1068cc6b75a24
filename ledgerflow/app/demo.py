"""``ledgerflow demo``: run the stack, post a real Mercoa invoice webhook, wait for every ERP's result.

The sample is ``../shared/samples/mercoa/invoice.created.json`` when present beside the project
(the real payload from Mercoa's documentation), else :data:`FALLBACK_INVOICE`, a smaller invoice
of the same shape. The demo succeeds when every ERP connection routed for tenant ``demo``
reports ``succeeded`` with an ERP record id, and the total each sandbox stored equals the
webhook's ``invoice.amount``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledgerflow.app.stack import RunningStack
from ledgerflow.connectors.registry import ERPS
from ledgerflow.contracts import Outcome, SyncResult
from ledgerflow.core.settings import Routing

__all__ = ["FALLBACK_INVOICE", "DemoRow", "collect_results", "load_sample", "post_webhook", "sandbox_totals"]

FALLBACK_INVOICE: dict[str, Any] = {
    "eventType": "invoice.created",
    "invoice": {
        "id": "in_demo-0001",
        "status": "APPROVED",
        "amount": 1235.56,
        "currency": "USD",
        "invoiceNumber": "DEMO-1001",
        "invoiceDate": "2026-11-01T00:00:00Z",
        "dueDate": "2026-12-01T00:00:00Z",
        "createdAt": "2026-11-01T09:00:00Z",
        "updatedAt": "2026-11-01T09:00:00Z",
        "vendorId": "ent_demo-vendor",
        "vendor": {"id": "ent_demo-vendor", "name": "Demo Supplies LLC", "email": "ap@demo-supplies.example"},
        "lineItems": [
            {
                "id": "inli_demo-1",
                "description": "Site office rental, November",
                "quantity": 1,
                "unitPrice": 1000,
                "amount": 1000,
                "currency": "USD",
                "glAccountId": "600394",
            },
            {
                "id": "inli_demo-2",
                "description": "Safety equipment",
                "quantity": 3,
                "unitPrice": 78.52,
                "amount": 235.56,
                "currency": "USD",
                "glAccountId": "600394",
            },
        ],
    },
}
"""A Mercoa ``invoice.created`` body of the documented shape (used when shared/ is absent)."""


def load_sample(path: Path | None) -> bytes:
    """The webhook body to post: ``path``, else the shared sample beside the project, else the fallback."""
    candidates = [path] if path else []
    candidates.append(
        Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "mercoa" / "invoice.created.json"
    )
    candidates.append(Path.cwd().parent / "shared" / "samples" / "mercoa" / "invoice.created.json")
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate.read_bytes()
    return orjson.dumps(FALLBACK_INVOICE)


async def post_webhook(stack: RunningStack, body: bytes, tenant: str = "demo", token: str = "demo-token") -> str:  # noqa: S107 - the demo tenant's token
    """POST ``body`` as a Mercoa webhook and return the event id from the 200 answer (Mercoa's success status).

    Raises:
        RuntimeError: the ingress did not answer 200 (its problem detail is in the message).
    """
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"{stack.ingress_url}/webhooks/{tenant}/mercoa",
            content=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        )
    if resp.status_code != 200:  # Mercoa documents "Return a 200 status"
        raise RuntimeError(f"ingress answered {resp.status_code}: {resp.text}")
    return str(resp.json()["event_id"])


async def collect_results(
    bootstrap: str,
    topic: str,
    canonical_id: str,
    connections: Sequence[str],
    timeout: float = 60.0,  # noqa: ASYNC109
    *,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, SyncResult]:
    """Read ``topic`` from the beginning until each connection's result for ``canonical_id`` arrived.

    ``client_options`` is the Kafka connection's security
    (:func:`ledgerflow.core.kafka.kafka_client_options`), PLAINTEXT when None.
    Returns the latest result per connection found before ``timeout`` seconds (possibly fewer).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **(client_options or {}))
    await consumer.start()
    found: dict[str, SyncResult] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        while not partitions:
            await consumer.topics()  # refreshes the cluster metadata
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(found) != set(connections):
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for msg in messages:
                    result = SyncResult.model_validate_json(msg.value or b"{}")
                    if result.canonical_id == canonical_id and result.connection in connections:
                        found[result.connection] = result
    finally:
        await consumer.stop()
    return found


async def sandbox_totals(stack: RunningStack) -> dict[str, dict[str, Decimal]]:
    """ERP kind → {record id → stored total} of every record with a total (bills, invoices) in each sandbox.

    Sandboxes name their kinds as their ERP does (QuickBooks ``bill``, Xero ``invoice`` of type
    ACCPAY), so records are not filtered by kind; ids are unique within one sandbox.
    """
    totals: dict[str, dict[str, Decimal]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for erp, url in stack.sandboxes.items():
            resp = await client.get(f"{url}/_sandbox/records")
            if resp.status_code != 200:
                continue
            records = orjson.loads(resp.content).get("records", [])
            totals[erp] = {str(r["id"]): Decimal(str(r["total"])) for r in records if r.get("total") is not None}
    return totals


@dataclass(frozen=True)
class DemoRow:
    """One line of the demo's table."""

    result: SyncResult
    stored_total: Decimal | None
    expected_total: Decimal

    @property
    def ok(self) -> bool:
        """Succeeded, with an ERP id, and the stored total equals the webhook's amount."""
        return (
            self.result.outcome is Outcome.SUCCEEDED
            and self.result.erp_record_id is not None
            and self.stored_total == self.expected_total
        )


def all_erps_routing() -> Routing:
    """The demo routing fanned out to one local sandbox of every registered ERP kind (``demo --all-erps``).

    One connection per kind, named after it, taking bills and vendors; tenant ``demo`` with the
    Mercoa token ``demo-token``. SAP maps the sample's GL account ``600394`` to the G/L account
    ``61002000`` (Construction materials) of its chart ``YCOA``, as an SAP tenant maps its source's
    account codes (``gl_accounts``): the stack's reference sync reads that chart, and the reference
    check refuses an account it does not hold.
    """
    kinds = list(ERPS)
    options: dict[str, dict[str, object]] = {"sap": {"gl_accounts": {"600394": "61002000"}}}
    return Routing.model_validate(
        {
            "tenants": {"demo": {"sources": {"mercoa": {"tokens": ["demo-token"]}}, "connections": kinds}},
            "connections": {
                erp: {"erp": erp, "objects": ["bill", "vendor"], "options": options.get(erp, {})} for erp in kinds
            },
        }
    )
