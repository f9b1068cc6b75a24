"""One record never stalls the transformer: a poison event is dead-lettered, the rest of its batch is mapped.

Reproduces issue 13's example: an authenticated Mercoa ``invoice.created`` whose ``metadata`` is a
list made the mapper raise an ``AttributeError`` the worker did not catch, so the whole batch was
redelivered forever and its good records re-published on every round.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.settings import Settings
from ledgerflow.transformers.worker import Transformer
from tests.records import FakeRecord
from tests.transformers.transformer_helpers import raw_event


class _RecordingBroker:
    """The part of a FastStream broker the transformer publishes through; every write is acknowledged."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes | None, bytes, dict[str, str]]] = []

    async def publish(self, value: bytes, *, topic: str, key: bytes | None, headers: dict[str, str], **_: Any) -> Any:
        self.published.append((topic, key, value, headers))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


class _NoEnrichment:
    """Enrichers for tenants without any source API configured."""

    def get(self, name: str) -> Any:
        return self

    def for_tenant(self, tenant: str) -> None:
        return None


def _mercoa_invoice(shared_dir: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((shared_dir / "samples/mercoa/invoice.created.json").read_text())
    return payload


def _raw_record(offset: int, payload: dict[str, Any], event_id: str) -> FakeRecord:
    attrs = EventAttributes(
        id=event_id,
        source="/tenants/acme/mercoa",
        type="io.ledgerflow.raw.mercoa.invoice.created",
        tenant="acme",
        extensions={"sourceevent": "invoice.created"},
    )
    return FakeRecord(
        "ledgerflow.raw.mercoa",
        0,
        offset,
        f"k{offset}".encode(),
        orjson.dumps(payload),
        [(k, v.encode()) for k, v in attrs.to_headers().items()],
    )


def test_the_mercoa_mapper_names_a_list_metadata_as_invalid(shared_dir: Path) -> None:
    from ledgerflow.contracts import ContractError
    from ledgerflow.transformers.mercoa.invoice import map_invoice

    payload = _mercoa_invoice(shared_dir)
    payload["invoice"]["metadata"] = ["not", "an", "object"]
    with pytest.raises(ContractError, match=r"invoice\.metadata"):
        map_invoice(raw_event("mercoa", "invoice.created", payload))


async def test_a_poison_invoice_is_dead_lettered_and_its_batch_is_mapped(shared_dir: Path) -> None:
    good = _mercoa_invoice(shared_dir)
    poison = copy.deepcopy(good)
    poison["invoice"]["metadata"] = ["not", "an", "object"]
    batch = []
    for i in range(10):
        payload = copy.deepcopy(good)
        payload["invoice"]["id"] = f"in_good_{i}"
        batch.append(_raw_record(i, payload, f"evt-{i}"))
    batch.insert(3, _raw_record(99, poison, "evt-poison"))
    broker = _RecordingBroker()
    transformer = Transformer(broker, Settings(), _NoEnrichment())  # type: ignore[arg-type]

    await transformer.handle_batch(batch, concurrency=4)

    bills = [p for p in broker.published if p[0] == "ledgerflow.bill.v1"]
    dead = [p for p in broker.published if p[0] == "ledgerflow.dlq.transform"]
    assert len(bills) == 10
    assert len(dead) == 1
    headers = dead[0][3]
    assert headers["ledgerflow_dlq_reason"] == "invalid-record"
    assert "invoice.metadata" in headers["ledgerflow_dlq_detail"]
    assert headers["ledgerflow_dlq_stage"] == "transform"
