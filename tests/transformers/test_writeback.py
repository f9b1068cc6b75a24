"""The source writers through the real broker: ERP records on the inbound topics written into the sources.

INGENIOUS (accounting objects with ``custom_id`` = the ERP id, payments on invoices), Mercoa
(invoice marked ``PAID``) and Monite (payable marked paid) sandboxes of the package take the
writes; every write gives a ``SyncResult`` with ``direction="inbound"`` on the results topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from ledgerflow.contracts import SyncResult
from ledgerflow.contracts.events import deterministic_id, inbound_event_attributes
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.asgi import serve
from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.settings import ConfigError, Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.ingenious.sandbox import IngeniousSandbox
from ledgerflow.transformers.mercoa.sandbox import MercoaSandbox
from ledgerflow.transformers.monite.sandbox import MoniteSandbox
from ledgerflow.transformers.writeback.main import run_source_writer
from ledgerflow.transformers.writeback.runtime import WritebackRetry, build_writers

pytestmark = pytest.mark.kafka

ENTITY = "9d2b4c8f-2087-4738-ba91-7359683c49a4"
FAST_RETRY = {"retry_attempts": 2, "retry_wait_initial": 0.01, "retry_wait_max": 0.05}


@dataclass
class Sources:
    """The three source sandboxes, served, and their base URLs."""

    ingenious: IngeniousSandbox
    mercoa: MercoaSandbox
    monite: MoniteSandbox
    urls: dict[str, str]


@pytest.fixture
async def sources() -> AsyncIterator[Sources]:
    ingenious, mercoa, monite = IngeniousSandbox(), MercoaSandbox(), MoniteSandbox()
    async with (
        serve(ingenious.app()) as ingenious_url,
        serve(mercoa.app()) as mercoa_url,
        serve(monite.app()) as monite_url,
    ):
        yield Sources(
            ingenious, mercoa, monite, {"ingenious": ingenious_url, "mercoa": mercoa_url, "monite": monite_url}
        )


def routing_for(sources: Sources, tenant: str = "acme", connection: str = "qbo") -> Routing:
    """Tenant ``tenant`` fed by ``connection``, writing back into all three sources."""
    return Routing.model_validate(raw_routing(sources, tenant, connection))


def raw_routing(sources: Sources, tenant: str = "acme", connection: str = "qbo") -> dict[str, Any]:
    """The routing file of :func:`routing_for`, as parsed YAML."""
    s = sources
    return {
        "tenants": {
            tenant: {
                "connections": [connection],
                "sources": {
                    "ingenious": {
                        "options": {"api_base_url": s.urls["ingenious"], "api_token": s.ingenious.token, **FAST_RETRY}
                    },
                    "mercoa": {
                        "options": {"api_base_url": s.urls["mercoa"], "api_key": s.mercoa.api_key, **FAST_RETRY}
                    },
                    "monite": {
                        "options": {
                            "api_base_url": s.urls["monite"],
                            "client_id": s.monite.client_id,
                            "client_secret": s.monite.client_secret,
                            "entity_id": ENTITY,
                            **FAST_RETRY,
                        }
                    },
                },
                "writeback": {"ingenious": {}, "mercoa": {"mark_paid": True}, "monite": {"mark_paid": True}},
            }
        },
        "connections": {connection: {"erp": "quickbooks"}},
    }


def vendor(erp_id: str, name: str, connection: str = "qbo") -> ReferenceRecord:
    return ReferenceRecord(
        kind="vendor",
        erp="quickbooks",
        connection=connection,
        entity="Vendor",
        erp_id=erp_id,
        name=name,
        active=True,
        erp_record={"Id": erp_id, "DisplayName": name},
    )


def account(erp_id: str, number: str, name: str) -> ReferenceRecord:
    return ReferenceRecord(
        kind="gl_account",
        erp="quickbooks",
        connection="qbo",
        entity="Account",
        erp_id=erp_id,
        code=number,
        name=name,
        active=True,
        erp_record={"Id": erp_id, "AcctNum": number, "Name": name},
    )


def bill_payment(erp_id: str, amount: str, currency: str, applied: list[AppliedDocument]) -> ReferenceRecord:
    return ReferenceRecord(
        kind="payment",
        erp="quickbooks",
        connection="qbo",
        entity="BillPayment",
        erp_id=erp_id,
        name=f"BillPayment {erp_id}",
        active=True,
        amount=Decimal(amount),
        currency=currency,
        paid_on=date(2026, 11, 30),
        applied_to=applied,
        erp_record={"Id": erp_id},
    )


def paid(source: str, source_id: str, amount: str, tenant: str = "acme", erp_id: str = "b1") -> AppliedDocument:
    return AppliedDocument(
        entity="Bill",
        erp_id=erp_id,
        amount=Decimal(amount),
        object_type="bill",
        tenant=tenant,
        source=source,
        source_id=source_id,
    )


async def publish(settings: Settings, bootstrap: str, *records: ReferenceRecord, event: str = "") -> None:
    """Publish ``records`` to their inbound topics as ``sync-reference`` does (``ce_direction: inbound``)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for record in records:
            body = record.model_dump_json().encode()
            attrs = inbound_event_attributes(
                id=deterministic_id(record.key, body, event),
                tenant="acme",
                erp=record.erp,
                connection=record.connection,
                kind=record.kind,
                subject=record.key,
                time=datetime(2026, 11, 30, tzinfo=UTC),
            )
            await producer.send_and_wait(
                settings.topics.inbound(record.kind),
                body,
                key=record.key.encode(),
                headers=[(k, v.encode()) for k, v in attrs.to_headers().items()],
            )
    finally:
        await producer.stop()


class Topic:
    """Reads a topic from the beginning, keeping what it has seen (results, dead letters)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.messages: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Topic:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic) or {0}
        tps = [TopicPartition(self.topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def wait_for(self, count: int, within: float = 20.0) -> list[Any]:
        """At least ``count`` messages seen in all (fails after ``within`` seconds)."""
        assert self._consumer is not None
        deadline = asyncio.get_running_loop().time() + within
        while len(self.messages) < count:
            assert asyncio.get_running_loop().time() < deadline, f"{len(self.messages)} of {count} on {self.topic}"
            batch = await self._consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                self.messages.extend(messages)
        return self.messages

    async def settle(self, quiet: float = 1.0) -> list[Any]:
        """Everything seen once nothing new arrived for ``quiet`` seconds."""
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=int(quiet * 1000))
            if not any(batch.values()):
                return self.messages
            for messages in batch.values():
                self.messages.extend(messages)

    def results(self) -> list[SyncResult]:
        return [SyncResult.model_validate_json(m.value) for m in self.messages]


@contextlib.asynccontextmanager
async def writer(
    settings: Settings, routing: Routing, bootstrap: str, embedded: bool, tmp_path: Path, **kwargs: Any
) -> AsyncIterator[StateStore]:
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await state.create_all()
    try:
        async with (
            httpx.AsyncClient() as http,
            run_source_writer(
                settings, routing, bootstrap, embedded=embedded, http=http, state=state, report_lag=False, **kwargs
            ),
        ):
            yield state
    finally:
        await state.close()


@pytest.fixture
async def settings(kafka_bootstrap: str, kafka_is_embedded: bool, unique: str) -> Settings:
    made = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"wb{unique}",
        kafka_fetch_max_wait_ms=50,
    )
    await ensure_topics(kafka_bootstrap, made.topics.all(), partitions=2)
    return made


async def test_vendor_and_gl_account_from_the_erp_appear_in_ingenious_with_custom_id_and_redelivery_writes_nothing(
    settings: Settings, sources: Sources, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    routing = routing_for(sources)
    records = [vendor("56", "Norton Lumber"), account("7", "6100", "Job Materials")]
    async with (
        Topic(kafka_bootstrap, settings.topics.results) as results,
        writer(settings, routing, kafka_bootstrap, kafka_is_embedded, tmp_path),
    ):
        await publish(settings, kafka_bootstrap, *records)
        await results.wait_for(2)
        company = sources.ingenious.find("company", "56")
        entity = sources.ingenious.find("entity", "7")
        assert company is not None
        assert company["name"] == "Norton Lumber"
        assert entity is not None
        assert (entity["name"], entity["code"]) == ("Job Materials", "6100")
        first = {r.object_type: r for r in results.results()}
        assert {k: (r.direction, r.outcome.value, r.operation.value) for k, r in first.items()} == {
            "vendor": ("inbound", "succeeded", "create"),
            "gl_account": ("inbound", "succeeded", "create"),
        }
        assert first["vendor"].source_record_id == company["id"]
        assert first["vendor"].erp_record_id == "56"
        assert (first["vendor"].source, first["vendor"].connection, first["vendor"].erp) == (
            "ingenious",
            "qbo",
            "quickbooks",
        )

        # Redelivered (as a new event: sync-reference read it again): the ledger says it is there.
        writes_before = [c for c in sources.ingenious.faults.calls if not c.startswith("GET")]
        await publish(settings, kafka_bootstrap, *records, event="again")
        await results.wait_for(4)
        assert [r.outcome.value for r in results.results()[2:]] == ["duplicate", "duplicate"]
        assert [c for c in sources.ingenious.faults.calls if not c.startswith("GET")] == writes_before
        assert len(sources.ingenious.objects["company"]) == 1

        # Renamed in the ERP: the same INGENIOUS company is updated, not a second one created.
        await publish(settings, kafka_bootstrap, vendor("56", "Norton Lumber & Supply"))
        renamed = (await results.wait_for(5))[4]
        result = SyncResult.model_validate_json(renamed.value)
        assert (result.operation.value, result.outcome.value) == ("update", "succeeded")
        assert sources.ingenious.objects["company"][company["id"]]["name"] == "Norton Lumber & Supply"
        assert len(sources.ingenious.objects["company"]) == 1


async def test_an_existing_object_with_that_custom_id_is_updated_not_duplicated(
    settings: Settings, sources: Sources, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    """No ledger row (a fresh state store, or created by hand in INGENIOUS): looked up by custom_id first."""
    sources.ingenious.objects["company"]["company-pre"] = {"id": "company-pre", "custom_id": "56", "name": "Old"}
    async with (
        Topic(kafka_bootstrap, settings.topics.results) as results,
        writer(settings, routing_for(sources), kafka_bootstrap, kafka_is_embedded, tmp_path),
    ):
        await publish(settings, kafka_bootstrap, vendor("56", "Norton Lumber"))
        (result,) = [SyncResult.model_validate_json(m.value) for m in await results.wait_for(1)]
    assert (result.operation.value, result.source_record_id) == ("update", "company-pre")
    assert list(sources.ingenious.objects["company"]) == ["company-pre"]
    assert sources.ingenious.objects["company"]["company-pre"]["name"] == "Norton Lumber"


async def test_a_bill_paid_in_the_erp_marks_the_ingenious_mercoa_and_monite_documents_paid_once(
    settings: Settings, sources: Sources, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    sources.ingenious.add_invoice("ing-inv-1", Decimal("120.00"), "USD")
    sources.mercoa.add_invoice("in_26e7b5d3", 80.5, "USD", status="SCHEDULED")
    sources.monite.add_payable("pay-1", ENTITY, 4000, "USD")
    payment = bill_payment(
        "301",
        "240.50",
        "USD",
        [
            paid("ingenious", "ing-inv-1", "120.00", erp_id="b1"),
            paid("mercoa", "in_26e7b5d3", "80.50", erp_id="b2"),
            paid("monite", "pay-1", "40.00", erp_id="b3"),
        ],
    )
    async with (
        Topic(kafka_bootstrap, settings.topics.results) as results,
        writer(settings, routing_for(sources), kafka_bootstrap, kafka_is_embedded, tmp_path),
    ):
        await publish(settings, kafka_bootstrap, payment)
        await results.wait_for(3)
        assert sources.ingenious.invoices["ing-inv-1"]["status"] == "paid"
        assert sources.ingenious.invoices["ing-inv-1"]["payments"][0]["custom_id"] == "301"
        assert sources.mercoa.invoices["in_26e7b5d3"]["status"] == "PAID"
        assert sources.mercoa.invoices["in_26e7b5d3"]["settlementDate"] == "2026-11-30T00:00:00Z"
        assert (sources.monite.payables["pay-1"]["status"], sources.monite.payables["pay-1"]["amount_paid"]) == (
            "paid",
            4000,
        )
        got = {r.source: r for r in results.results()}
        assert {s: (r.direction, r.object_type, r.outcome.value) for s, r in got.items()} == {
            s: ("inbound", "payment", "succeeded") for s in ("ingenious", "mercoa", "monite")
        }
        assert (got["mercoa"].source_record_id, got["mercoa"].amount, got["mercoa"].erp_record_id) == (
            "in_26e7b5d3",
            Decimal("80.50"),
            "301",
        )

        # The same payment again: nothing is marked twice, each write is a duplicate.
        marks = [c for src in (sources.ingenious, sources.mercoa, sources.monite) for c in src.faults.calls]
        await publish(settings, kafka_bootstrap, payment, event="again")
        await results.wait_for(6)
        assert sorted(r.outcome.value for r in results.results()[3:]) == ["duplicate"] * 3
        after = [c for src in (sources.ingenious, sources.mercoa, sources.monite) for c in src.faults.calls]
        assert after == marks, "a redelivered payment called a source API"
        assert len(sources.ingenious.invoices["ing-inv-1"]["payments"]) == 1


async def test_a_partial_payment_marks_the_monite_payable_partially_paid_and_the_second_settles_it(
    settings: Settings, sources: Sources, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    sources.monite.add_payable("pay-2", ENTITY, 10000, "EUR")
    first = bill_payment("401", "30.00", "EUR", [paid("monite", "pay-2", "30.00")])
    second = bill_payment("402", "70.00", "EUR", [paid("monite", "pay-2", "70.00")])
    async with (
        Topic(kafka_bootstrap, settings.topics.results) as results,
        writer(settings, routing_for(sources), kafka_bootstrap, kafka_is_embedded, tmp_path),
    ):
        await publish(settings, kafka_bootstrap, first)
        await results.wait_for(1)
        payable = sources.monite.payables["pay-2"]
        assert (payable["status"], payable["amount_paid"], payable["amount_due"]) == ("partially_paid", 3000, 7000)
        await publish(settings, kafka_bootstrap, first, event="again")  # redelivered: not added twice
        await publish(settings, kafka_bootstrap, second)
        await results.wait_for(3)
    assert (payable["status"], payable["amount_paid"]) == ("paid", 10000)
    assert [r.outcome.value for r in results.results()] == ["succeeded", "duplicate", "succeeded"]


async def test_a_5xx_then_success_and_a_4xx_is_a_failed_result(
    settings: Settings, sources: Sources, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    sources.ingenious.faults.arm(503, retry_after="0", path_prefix="/accounting-companies")
    sources.monite.add_payable("pay-draft", ENTITY, 500, "USD", status="draft")
    async with (
        Topic(kafka_bootstrap, settings.topics.results) as results,
        writer(settings, routing_for(sources), kafka_bootstrap, kafka_is_embedded, tmp_path),
    ):
        await publish(settings, kafka_bootstrap, vendor("88", "Flaky Ltd"))
        await publish(
            settings, kafka_bootstrap, bill_payment("501", "5.00", "USD", [paid("monite", "pay-draft", "5.00")])
        )
        await results.wait_for(2)
    got = {r.object_type: r for r in results.results()}
    assert got["vendor"].outcome.value == "succeeded"
    assert got["vendor"].attempts == 3
    assert sources.ingenious.find("company", "88") is not None
    refused = got["payment"]
    assert (refused.outcome.value, refused.http_status) == ("failed", 409)
    assert refused.error is not None
    assert refused.error.code == "source.invalid_state"
    assert not refused.error.retriable
    assert "current state" in refused.error.message
    assert sources.monite.payables["pay-draft"]["status"] == "draft"


async def test_a_source_that_keeps_failing_is_parked_then_dead_lettered_with_reason_and_metric(
    settings: Settings, sources: Sources, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path
) -> None:
    sources.mercoa.add_invoice("in_down", 10.0, "USD")
    sources.mercoa.faults.arm(503, count=50, retry_after="0", path_prefix="/invoice")
    sources.ingenious.add_invoice("ing-ok", Decimal("10.00"), "USD")
    payment = bill_payment(
        "601", "20.00", "USD", [paid("mercoa", "in_down", "10.00"), paid("ingenious", "ing-ok", "10.00")]
    )
    before = (
        REGISTRY.get_sample_value(
            "ledgerflow_dlq_messages_total", {"stage": "writeback", "reason": "retries-exhausted"}
        )
        or 0
    )
    async with (
        Topic(kafka_bootstrap, settings.topics.results) as results,
        Topic(kafka_bootstrap, settings.topics.dlq("writeback")) as dead,
        writer(
            settings,
            routing_for(sources),
            kafka_bootstrap,
            kafka_is_embedded,
            tmp_path,
            retry=WritebackRetry((0.0, 0.2)),
        ),
    ):
        await publish(settings, kafka_bootstrap, payment)
        (letter,) = await dead.wait_for(1, within=30)
        await results.settle(0.5)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["ledgerflow_dlq_stage"] == "writeback"
    assert headers["ledgerflow_dlq_reason"] == "retries-exhausted"
    assert headers["ledgerflow_dlq_original_topic"] == settings.topics.inbound("payment")
    assert headers["ledgerflow_writeback_targets"] == "acme/mercoa"
    assert json.loads(letter.value)["erp_id"] == "601"
    by_source: dict[str, list[str]] = {}
    for r in results.results():
        by_source.setdefault(r.source, []).append(r.outcome.value)
    # Three rounds for Mercoa (first try, tier 1, tier 2), each a failed retriable result; INGENIOUS once.
    assert by_source == {"mercoa": ["failed"] * 3, "ingenious": ["succeeded"]}
    assert all(r.error is not None and r.error.retriable for r in results.results() if r.source == "mercoa")
    after = REGISTRY.get_sample_value(
        "ledgerflow_dlq_messages_total", {"stage": "writeback", "reason": "retries-exhausted"}
    )
    assert after == before + 1
    assert sources.mercoa.invoices["in_down"]["status"] == "APPROVED"


def test_a_writer_enabled_without_its_source_credentials_is_a_config_error(sources: Sources) -> None:
    raw = raw_routing(sources)
    raw["tenants"]["acme"]["sources"]["monite"]["options"].pop("entity_id")
    broken = Routing.model_validate(raw)
    with pytest.raises(ConfigError, match=r"sources\.monite\.options lacks entity_id"):
        build_writers(broken, httpx.AsyncClient())
    with pytest.raises(ValueError, match="unknown reference kind"):
        Routing.model_validate({"tenants": {"a": {"writeback": {"ingenious": {"objects": {"invoices": "company"}}}}}})
