"""The source writers through the real broker: ERP records on the inbound topics written into the sources.

INGENIOUS (accounting objects with ``custom_id`` = the ERP id, payments on invoices), Mercoa
(invoice marked ``PAID``) and Monite (payable marked paid) sandboxes of the package take the
writes; every write gives a ``SyncResult`` with ``direction="inbound"`` on the results topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
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
from ledgerflow.core.deadletters import replay_headers
from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.settings import ConfigError, Routing, Settings
from ledgerflow.core.state import StateStore
from ledgerflow.transformers.ingenious.sandbox import IngeniousSandbox
from ledgerflow.transformers.mercoa.sandbox import MercoaSandbox
from ledgerflow.transformers.monite.sandbox import MoniteSandbox
from ledgerflow.transformers.writeback.main import run_source_writer
from ledgerflow.transformers.writeback.runtime import WritebackRetry, check_writeback

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

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic) or {0}
        tps = [TopicPartition(self.topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def _poll(self, timeout_ms: int = 200) -> bool:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        for messages in batch.values():
            self.messages.extend(messages)
        return any(batch.values())

    async def wait_for(self, count: int, match: Callable[[Any], bool], within: float = 20.0) -> list[Any]:
        """The messages ``match`` accepts, once there are at least ``count`` (fails after ``within`` seconds)."""
        deadline = asyncio.get_running_loop().time() + within
        while len(found := [m for m in self.messages if match(m)]) < count:
            assert asyncio.get_running_loop().time() < deadline, f"{len(found)} of {count} on {self.topic}"
            await self._poll()
        return found

    async def settle(self, quiet: float = 1.0) -> None:
        """Read until nothing new arrived for ``quiet`` seconds."""
        while await self._poll(int(quiet * 1000)):
            pass


@dataclass
class Running:
    """The source writer running for the module, with its sources and the topics it writes."""

    sources: Sources
    settings: Settings
    bootstrap: str
    results: Topic
    dead: Topic
    state: StateStore

    async def publish(self, *records: ReferenceRecord, event: str = "") -> None:
        await publish(self.settings, self.bootstrap, *records, event=event)

    async def results_of(self, erp_ids: set[str], count: int, within: float = 20.0) -> list[SyncResult]:
        """The results of records with these ERP ids, once there are ``count`` of them, in arrival order."""

        def ours(message: Any) -> bool:
            return SyncResult.model_validate_json(message.value).erp_record_id in erp_ids

        found = await self.results.wait_for(count, ours, within)
        return [SyncResult.model_validate_json(m.value) for m in found]


@pytest.fixture(scope="module")
async def running(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """One source writer for the whole module (a consumer group joins in seconds: once, not per test)."""
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"wb{uuid.uuid4().hex[:8]}",
        kafka_fetch_max_wait_ms=50,
    )
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=2)
    ingenious, mercoa, monite = IngeniousSandbox(), MercoaSandbox(), MoniteSandbox()
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('writeback') / 'state.db'}")
    await state.create_all()
    results = Topic(kafka_bootstrap, settings.topics.results)
    dead = Topic(kafka_bootstrap, settings.topics.dlq("writeback"))
    try:
        async with (
            serve(ingenious.app()) as ingenious_url,
            serve(mercoa.app()) as mercoa_url,
            serve(monite.app()) as monite_url,
        ):
            urls = {"ingenious": ingenious_url, "mercoa": mercoa_url, "monite": monite_url}
            sources = Sources(ingenious, mercoa, monite, urls)
            async with (
                httpx.AsyncClient() as http,
                run_source_writer(
                    settings,
                    routing_for(sources),
                    kafka_bootstrap,
                    embedded=kafka_is_embedded,
                    http=http,
                    state=state,
                    report_lag=False,
                    retry=WritebackRetry((0.0, 0.2)),
                ),
            ):
                await results.start()
                await dead.start()
                try:
                    yield Running(sources, settings, kafka_bootstrap, results, dead, state)
                finally:
                    await results.stop()
                    await dead.stop()
    finally:
        await state.close()


async def test_vendor_and_gl_account_from_the_erp_appear_in_ingenious_with_custom_id_and_redelivery_writes_nothing(
    running: Running,
) -> None:
    ing = running.sources.ingenious
    records = [vendor("56", "Norton Lumber"), account("7", "6100", "Job Materials")]
    await running.publish(*records)
    first = {r.object_type: r for r in await running.results_of({"56", "7"}, 2)}
    company = ing.find("company", "56")
    entity = ing.find("entity", "7")
    assert company is not None
    assert company["name"] == "Norton Lumber"
    assert entity is not None
    assert (entity["name"], entity["code"]) == ("Job Materials", "6100")
    assert {k: (r.direction, r.outcome.value, r.operation.value) for k, r in first.items()} == {
        "vendor": ("inbound", "succeeded", "create"),
        "gl_account": ("inbound", "succeeded", "create"),
    }
    got = first["vendor"]
    assert (got.source_record_id, got.erp_record_id, got.source, got.connection, got.erp) == (
        company["id"],
        "56",
        "ingenious",
        "qbo",
        "quickbooks",
    )

    # Read again by sync-reference (a new event): the ledger says it is there, nothing is sent.
    writes_before = [c for c in ing.faults.calls if not c.startswith("GET")]
    await running.publish(*records, event="again")
    again = (await running.results_of({"56", "7"}, 4))[2:]
    assert [r.outcome.value for r in again] == ["duplicate", "duplicate"]
    assert [c for c in ing.faults.calls if not c.startswith("GET")] == writes_before
    assert [o["custom_id"] for o in ing.objects["company"].values()].count("56") == 1

    # Renamed in the ERP: the same INGENIOUS company is updated, not a second one created.
    await running.publish(vendor("56", "Norton Lumber & Supply"))
    renamed = (await running.results_of({"56", "7"}, 5))[4]
    assert (renamed.operation.value, renamed.outcome.value) == ("update", "succeeded")
    assert ing.objects["company"][company["id"]]["name"] == "Norton Lumber & Supply"

    # Deleted in the ERP (a reader's tombstone): deactivated, not renamed to nothing.
    tombstone = ReferenceRecord(
        kind="vendor", erp="quickbooks", connection="qbo", entity="Vendor", erp_id="56", name="", active=False,
        erp_record={"Id": "56", "status": "Deleted"},
    )  # fmt: skip
    await running.publish(tombstone)
    deleted = (await running.results_of({"56", "7"}, 6))[5]
    assert (deleted.operation.value, deleted.outcome.value) == ("update", "succeeded")
    assert ing.objects["company"][company["id"]]["name"] == "Norton Lumber & Supply"
    assert ing.objects["company"][company["id"]]["active"] is False


async def test_xero_tracking_options_become_ingenious_cost_codes_named_as_xero_books_them(running: Running) -> None:
    category = ReferenceRecord(
        kind="tracking",
        erp="xero",
        connection="qbo",
        entity="TrackingCategory",
        erp_id="tc-1",
        name="Region",
        active=True,
        erp_record={
            "TrackingCategoryID": "tc-1",
            "Name": "Region",
            "Options": [
                {"TrackingOptionID": "o-1", "Name": "North", "Status": "ACTIVE"},
                {"TrackingOptionID": "o-2", "Name": "South", "Status": "ARCHIVED"},
            ],
        },
    )
    await running.publish(category)
    results = await running.results_of({"North", "South"}, 2)
    assert sorted((r.erp_record_id, r.outcome.value) for r in results) == [
        ("North", "succeeded"),
        ("South", "succeeded"),
    ]
    codes = running.sources.ingenious
    north, south = codes.find("cost_code", "North"), codes.find("cost_code", "South")
    assert north is not None
    assert north["active"] is True
    assert south is not None
    assert south["active"] is False
    assert codes.find("cost_code", "tc-1") is None


async def test_an_existing_object_with_that_custom_id_is_updated_not_duplicated(running: Running) -> None:
    """No ledger row (created by hand in INGENIOUS, or a lost state store): looked up by custom_id first."""
    companies = running.sources.ingenious.objects["company"]
    companies["company-pre"] = {"id": "company-pre", "custom_id": "57", "name": "Old"}
    await running.publish(vendor("57", "Acme Concrete"))
    (result,) = await running.results_of({"57"}, 1)
    assert (result.operation.value, result.source_record_id) == ("update", "company-pre")
    assert [o["id"] for o in companies.values() if o["custom_id"] == "57"] == ["company-pre"]
    assert companies["company-pre"]["name"] == "Acme Concrete"


async def test_a_bill_paid_in_the_erp_marks_the_ingenious_mercoa_and_monite_documents_paid_once(
    running: Running,
) -> None:
    src = running.sources
    src.ingenious.add_invoice("ing-inv-1", Decimal("120.00"), "USD")
    src.mercoa.add_invoice("in_26e7b5d3", 80.5, "USD", status="SCHEDULED")
    src.monite.add_payable("pay-1", ENTITY, 4000, "USD")
    payment = bill_payment(
        "301",
        "240.50",
        "USD",
        [
            paid("ingenious", "ing-inv-1", "120.00", erp_id="b1"),
            paid("mercoa", "in_26e7b5d3", "80.50", erp_id="b2"),
            paid("monite", "pay-1", "40.00", erp_id="b3"),
            paid("mercoa", "in_other_tenant", "0.00", tenant="beta"),  # another tenant's: left alone
            AppliedDocument(entity="Bill", erp_id="b9", amount=Decimal("0.00")),  # not booked by ledgerflow
        ],
    )
    await running.publish(payment)
    got = {r.source: r for r in await running.results_of({"301"}, 3)}
    assert src.ingenious.invoices["ing-inv-1"]["status"] == "paid"
    assert src.ingenious.invoices["ing-inv-1"]["payments"][0]["custom_id"] == "301"
    assert src.mercoa.invoices["in_26e7b5d3"]["status"] == "PAID"
    assert src.mercoa.invoices["in_26e7b5d3"]["settlementDate"] == "2026-11-30T00:00:00Z"
    payable = src.monite.payables["pay-1"]
    assert (payable["status"], payable["amount_paid"]) == ("paid", 4000)
    assert {s: (r.direction, r.object_type, r.outcome.value) for s, r in got.items()} == {
        s: ("inbound", "payment", "succeeded") for s in ("ingenious", "mercoa", "monite")
    }
    assert (got["mercoa"].source_record_id, got["mercoa"].amount, got["mercoa"].erp_record_id) == (
        "in_26e7b5d3",
        Decimal("80.50"),
        "301",
    )

    # The same payment again: nothing is marked twice, each write is a duplicate.
    sandboxes = (src.ingenious, src.mercoa, src.monite)
    calls = [len(x.faults.calls) for x in sandboxes]
    await running.publish(payment, event="again")
    again = (await running.results_of({"301"}, 6))[3:]
    assert sorted(r.outcome.value for r in again) == ["duplicate"] * 3
    assert [len(x.faults.calls) for x in sandboxes] == calls, "a redelivered payment called a source API"
    assert len(src.ingenious.invoices["ing-inv-1"]["payments"]) == 1
    assert (await running.results_of({"301"}, 6, within=0.5))[6:] == []


async def test_a_partial_payment_marks_the_monite_payable_partially_paid_and_the_second_settles_it(
    running: Running,
) -> None:
    monite = running.sources.monite
    monite.add_payable("pay-2", ENTITY, 10000, "EUR")
    first = bill_payment("401", "30.00", "EUR", [paid("monite", "pay-2", "30.00")])
    second = bill_payment("402", "70.00", "EUR", [paid("monite", "pay-2", "70.00")])
    await running.publish(first)
    await running.results_of({"401"}, 1)
    payable = monite.payables["pay-2"]
    assert (payable["status"], payable["amount_paid"], payable["amount_due"]) == ("partially_paid", 3000, 7000)
    await running.publish(first, event="again")  # redelivered: its amount is not added twice
    await running.results_of({"401"}, 2)
    await running.publish(second)
    results = await running.results_of({"401", "402"}, 3)
    assert (payable["status"], payable["amount_paid"]) == ("paid", 10000)
    assert [r.outcome.value for r in results] == ["succeeded", "duplicate", "succeeded"]


async def test_mercoa_is_marked_paid_once_the_erp_payments_cover_the_invoice_each_counted_once(
    running: Running,
) -> None:
    mercoa = running.sources.mercoa
    mercoa.add_invoice("in_two_parts", 100.0, "USD")
    first = bill_payment("701", "60.00", "USD", [paid("mercoa", "in_two_parts", "60.00")])
    await running.publish(first)
    await running.publish(first, event="again")  # counted twice, it would cover the invoice
    partial = await running.results_of({"701"}, 2)
    assert [(r.outcome.value, r.error.code if r.error else None) for r in partial] == [
        ("skipped", "source.partial_payment")
    ] * 2
    assert mercoa.invoices["in_two_parts"]["status"] == "APPROVED"
    await running.publish(bill_payment("702", "40.00", "USD", [paid("mercoa", "in_two_parts", "40.00")]))
    (done,) = await running.results_of({"702"}, 1)
    assert done.outcome.value == "succeeded"
    assert mercoa.invoices["in_two_parts"]["status"] == "PAID"


async def test_payments_of_one_monite_payable_handled_at_once_add_up(running: Running) -> None:
    """Two ERP payments of one payable in one batch (own keys): amount_paid is the sum of both."""
    monite = running.sources.monite
    monite.add_payable("pay-3", ENTITY, 10000, "EUR")
    await running.publish(
        bill_payment("801", "20.00", "EUR", [paid("monite", "pay-3", "20.00")]),
        bill_payment("802", "30.00", "EUR", [paid("monite", "pay-3", "30.00")]),
        bill_payment("803", "10.00", "EUR", [paid("monite", "pay-3", "10.00")]),
    )
    results = await running.results_of({"801", "802", "803"}, 3)
    assert [r.outcome.value for r in results] == ["succeeded"] * 3
    assert (monite.payables["pay-3"]["status"], monite.payables["pay-3"]["amount_paid"]) == ("partially_paid", 6000)


async def test_a_payment_ledgerflow_booked_from_a_source_is_not_written_back_into_it(running: Running) -> None:
    """A Monite payment the connector booked into QuickBooks, read back: Monite is not told again."""
    monite = running.sources.monite
    monite.add_payable("pay-4", ENTITY, 10000, "EUR")
    await running.state.put_binding(
        "qbo", "acme:monite:payment:pr_1", erp_record_id="901", erp_version="0", content_hash="h"
    )
    await running.publish(bill_payment("901", "25.00", "EUR", [paid("monite", "pay-4", "25.00")]))
    (result,) = await running.results_of({"901"}, 1)
    assert (result.outcome.value, result.source) == ("skipped", "monite")
    assert result.error is not None
    assert result.error.code == "source.origin"
    assert (monite.payables["pay-4"]["status"], monite.payables["pay-4"]["amount_paid"]) == ("waiting_to_be_paid", 0)


async def test_a_5xx_then_success_and_a_4xx_is_a_failed_result(running: Running) -> None:
    src = running.sources
    src.ingenious.faults.arm(503, retry_after="0", path_prefix="/accounting-companies")
    src.monite.add_payable("pay-draft", ENTITY, 500, "USD", status="draft")
    await running.publish(vendor("88", "Flaky Ltd"))
    (flaky,) = await running.results_of({"88"}, 1)
    assert (flaky.outcome.value, flaky.attempts) == ("succeeded", 3)  # 503, lookup again, create
    assert src.ingenious.find("company", "88") is not None
    await running.publish(bill_payment("501", "5.00", "USD", [paid("monite", "pay-draft", "5.00")]))
    (refused,) = await running.results_of({"501"}, 1)
    assert (refused.outcome.value, refused.http_status) == ("failed", 409)
    assert refused.error is not None
    assert (refused.error.code, refused.error.retriable) == ("source.invalid_state", False)
    assert "current state" in refused.error.message
    assert src.monite.payables["pay-draft"]["status"] == "draft"


async def test_a_source_that_keeps_failing_is_parked_then_dead_lettered_with_reason_and_metric(
    running: Running,
) -> None:
    src = running.sources
    src.mercoa.add_invoice("in_down", 10.0, "USD")
    src.mercoa.faults.arm(503, count=50, retry_after="0", path_prefix="/invoice/in_down")
    src.ingenious.add_invoice("ing-ok", Decimal("10.00"), "USD")
    payment = bill_payment(
        "601", "20.00", "USD", [paid("mercoa", "in_down", "10.00"), paid("ingenious", "ing-ok", "10.00")]
    )
    labels = {"stage": "writeback", "reason": "retries-exhausted"}
    before = REGISTRY.get_sample_value("ledgerflow_dlq_messages_total", labels) or 0
    await running.publish(payment)
    (letter,) = await running.dead.wait_for(1, lambda m: json.loads(m.value)["erp_id"] == "601", within=30)
    # Three rounds for Mercoa (first try, tier 1, tier 2), each a failed retriable result; INGENIOUS once.
    results = await running.results_of({"601"}, 4)
    src.mercoa.faults.armed.clear()
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["ledgerflow_dlq_stage"] == "writeback"
    assert headers["ledgerflow_dlq_reason"] == "retries-exhausted"
    assert headers["ledgerflow_dlq_original_topic"] == running.settings.topics.inbound("payment")
    assert headers["ledgerflow_writeback_targets"] == "acme/mercoa"
    by_source: dict[str, list[str]] = {}
    for r in results:
        by_source.setdefault(r.source, []).append(r.outcome.value)
    assert by_source == {"mercoa": ["failed"] * 3, "ingenious": ["succeeded"]}
    assert all(r.error is not None and r.error.retriable for r in results if r.source == "mercoa")
    assert REGISTRY.get_sample_value("ledgerflow_dlq_messages_total", labels) == before + 1
    assert src.mercoa.invoices["in_down"]["status"] == "APPROVED"
    assert "ledgerflow_retry_tier" not in headers

    # Mercoa is back: the dead letter replayed (as `ledgerflow replay dlq` does) writes only what was left.
    producer = AIOKafkaProducer(bootstrap_servers=running.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            headers["ledgerflow_dlq_original_topic"],
            letter.value,
            key=letter.key,
            headers=replay_headers(letter.headers, letter.topic, letter.partition, letter.offset),
        )
    finally:
        await producer.stop()
    replayed = (await running.results_of({"601"}, 5))[4:]
    assert [(r.source, r.outcome.value) for r in replayed] == [("mercoa", "succeeded")]
    assert src.mercoa.invoices["in_down"]["status"] == "PAID"
    assert len(src.ingenious.invoices["ing-ok"]["payments"]) == 1


def test_a_writer_enabled_without_its_source_credentials_is_a_config_error() -> None:
    sources = Sources(
        IngeniousSandbox(),
        MercoaSandbox(),
        MoniteSandbox(),
        dict.fromkeys(("ingenious", "mercoa", "monite"), "http://x"),
    )
    raw = raw_routing(sources)
    raw["tenants"]["acme"]["sources"]["monite"]["options"].pop("entity_id")
    with pytest.raises(ConfigError, match=r"sources\.monite\.options lacks entity_id"):
        check_writeback(Routing.model_validate(raw))
    with pytest.raises(ValueError, match="unknown reference kind"):
        Routing.model_validate({"tenants": {"a": {"writeback": {"ingenious": {"objects": {"invoices": "company"}}}}}})


def test_the_command_refuses_a_writer_without_credentials_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ledgerflow.app.cli import app
    from ledgerflow.app.config_check import check_config

    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "tenants:\n  acme:\n    connections: [qbo]\n    sources: {mercoa: {options: {api_base_url: http://x}}}\n"
        "    writeback: {mercoa: {mark_paid: true}}\nconnections:\n  qbo: {erp: quickbooks}\n",
        encoding="utf-8",
    )
    for name in [k for k in os.environ if k.startswith("LEDGERFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(routing))
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["source-writer"])
    assert result.exit_code == 2, result.output
    assert "sources.mercoa.options lacks api_key" in result.output
    report = check_config(Settings())
    assert any(p.startswith("writeback: tenant 'acme' writes back into mercoa") for p in report.problems)
    assert report.plan["services"]["source_writer"]["tenants"] == {"acme": ["mercoa"]}
