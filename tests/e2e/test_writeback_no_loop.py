"""Nothing loops: records read from an ERP are written into the sources, never booked back into an ERP.

A transformer, a QuickBooks connector (against its sandbox) and the source writer run on the
real broker. A vendor read from QuickBooks (``ce_direction: inbound``) lands in INGENIOUS with
its ``custom_id``; the connector and the transformer never consume the inbound topics (no
committed offsets there), and the same record pushed by mistake onto a canonical or a raw topic is
dead-lettered (``inbound-record``) by the explicit guard instead of being booked or mapped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ledgerflow.connectors.main import run_connector
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.contracts import SyncResult
from ledgerflow.contracts.events import deterministic_id, inbound_event_attributes
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.settings import ConnectionConfig, Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.ingenious.sandbox import IngeniousSandbox
from ledgerflow.transformers.main import run_transformer
from ledgerflow.transformers.writeback.main import run_source_writer

pytestmark = pytest.mark.kafka


async def _messages(bootstrap: str, topic: str, want: int, within: float = 30.0) -> list[object]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[object] = []
        deadline = asyncio.get_running_loop().time() + within
        while len(seen) < want and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(batch)
        return seen
    finally:
        await consumer.stop()


async def test_a_vendor_read_from_quickbooks_reaches_ingenious_and_is_never_booked_back(
    kafka_bootstrap: str, kafka_is_embedded: bool, unique: str, tmp_path: Path, shared_dir: Path
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"nl{unique}",
        kafka_fetch_max_wait_ms=50,
    )
    topics = settings.topics
    await ensure_topics(kafka_bootstrap, topics.all(), partitions=2)
    ingenious = IngeniousSandbox()
    qbo_app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd")
    qbo_store = qbo_app.state.sandbox.store
    vendors_before = len(qbo_store.records["vendor"])
    vendor = ReferenceRecord(
        kind="vendor",
        erp="quickbooks",
        connection="qbo",
        entity="Vendor",
        erp_id="56",
        name="Norton Lumber",
        active=True,
        erp_record={"Id": "56", "DisplayName": "Norton Lumber"},
    )
    body = vendor.model_dump_json().encode()
    attrs = inbound_event_attributes(
        id=deterministic_id(vendor.key, body),
        tenant="acme",
        erp="quickbooks",
        connection="qbo",
        kind="vendor",
        subject=vendor.key,
    )
    headers = [(k, v.encode()) for k, v in attrs.to_headers().items()]
    async with serve(qbo_app) as qbo_url, serve(ingenious.app()) as ingenious_url:
        connection = qbo_sandbox.sandbox_connection(
            ConnectionConfig(erp="quickbooks", objects=["bill", "vendor"], options={"rate_limit_per_minute": 6000}),
            qbo_url,
        )
        routing = Routing.model_validate(
            {
                "tenants": {
                    "acme": {
                        "connections": ["qbo"],
                        "sources": {
                            "ingenious": {"options": {"api_base_url": ingenious_url, "api_token": ingenious.token}}
                        },
                        "writeback": {"ingenious": {}},
                    }
                },
                "connections": {"qbo": connection.model_dump()},
            }
        )
        state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        await state.create_all()
        common: dict[str, Any] = {"embedded": kafka_is_embedded, "state": state, "report_lag": False}
        try:
            async with (
                httpx.AsyncClient() as http,
                run_transformer(settings, routing, kafka_bootstrap, http=http, **common) as transformer,
                run_connector(settings, routing, "qbo", kafka_bootstrap, http=http, **common) as connector,
                run_source_writer(settings, routing, kafka_bootstrap, http=http, **common) as writer,
            ):
                producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
                await producer.start()
                try:
                    await producer.send_and_wait(topics.inbound("vendor"), body, key=b"qbo:Vendor:56", headers=headers)
                    # The same record pushed by mistake where the connector and the transformer read.
                    await producer.send_and_wait(topics.canonical("vendor"), body, key=b"m1", headers=headers)
                    await producer.send_and_wait(topics.raw("ingenious"), body, key=b"m2", headers=headers)
                finally:
                    await producer.stop()
                results = await _messages(kafka_bootstrap, topics.results, 1)
                connector_dead = await _messages(kafka_bootstrap, topics.dlq("connector"), 1)
                transform_dead = await _messages(kafka_bootstrap, topics.dlq("transform"), 1)
                await asyncio.sleep(1.0)  # let the consumers commit
                inbound = [topics.inbound(k) for k in ("vendor", "gl_account", "payment")]
                admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
                await admin.start()
                try:
                    partitions = [TopicPartition(t, p) for t in inbound for p in (0, 1)]
                    offsets = {
                        group: await admin.list_consumer_group_offsets(group, partitions=partitions)
                        for group in (
                            topics.group("transformer"),
                            topics.group("connector.qbo"),
                            topics.group("writeback"),
                        )
                    }
                finally:
                    await admin.close()
                watched = {t for _, ts in [*transformer.watched, *connector.watched] for t in ts}
                assert writer.watched
        finally:
            await state.close()

    company = ingenious.find("company", "56")
    assert company is not None
    assert company["name"] == "Norton Lumber"
    (result,) = [SyncResult.model_validate_json(m.value) for m in results]  # type: ignore[attr-defined]
    assert (result.direction, result.source, result.source_record_id) == ("inbound", "ingenious", company["id"])
    # Never booked back: QuickBooks has no new vendor, and no connector or transformer reads inbound topics.
    assert len(qbo_store.records["vendor"]) == vendors_before
    assert not watched & {topics.inbound(k) for k in ("vendor", "customer", "gl_account", "payment")}
    for group in (topics.group("transformer"), topics.group("connector.qbo")):
        committed = [m.offset for m in offsets[group].values() if m is not None and m.offset >= 0]
        assert committed == [], f"{group} consumed an inbound topic"
    assert sum(m.offset for m in offsets[topics.group("writeback")].values() if m is not None and m.offset > 0) == 1
    # The explicit guards: a misrouted inbound record is dead-lettered, not booked or mapped.
    for dead in (connector_dead, transform_dead):
        (letter,) = dead
        assert dict(letter.headers)["ledgerflow_dlq_reason"] == b"inbound-record"  # type: ignore[attr-defined]
