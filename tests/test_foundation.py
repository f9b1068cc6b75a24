"""The plumbing itself: embedded broker over TCP, state store on SQLite and PostgreSQL, contracts."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from ledgerflow.contracts import Bill
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.kafka import ensure_topics, missing_topics
from ledgerflow.core.state import StateStore, StoredToken


@pytest.mark.kafka
async def test_embedded_broker_round_trip_with_cloudevents_headers(kafka_bootstrap: str, unique: str) -> None:
    topic = f"foundation.{unique}"
    created = await ensure_topics(kafka_bootstrap, [topic], partitions=3)
    assert created == [topic]
    assert await missing_topics(kafka_bootstrap, [topic]) == []
    attrs = EventAttributes(id="evt-1", source="/tenants/t/mercoa", type="com.mercoa.invoice.created", tenant="t")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        headers = [(k, v.encode()) for k, v in attrs.to_headers().items()]
        await producer.send_and_wait(topic, b'{"a": 1}', key=b"k", headers=headers)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{unique}", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    back = EventAttributes.from_headers(dict(msg.headers))
    assert (back.id, back.tenant, back.type) == ("evt-1", "t", "com.mercoa.invoice.created")
    assert msg.value == b'{"a": 1}'


def _bill(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "canonical_id": "t:mercoa:bill:in_1",
        "tenant": "t",
        "source": "mercoa",
        "source_id": "in_1",
        "source_event": "invoice.created",
        "vendor": {"name": "V"},
        "bill_date": "2024-01-01",
        "currency": "usd",
        "line_items": [{"line_number": 1, "amount": "0.10", "quantity": 1, "unit_price": 0.1}],
        "subtotal": "0.10",
        "total": "0.10",
    }
    data.update(overrides)
    return data


def test_bill_amounts_are_decimal_and_serialise_as_strings() -> None:
    bill = Bill.model_validate(_bill())
    assert bill.currency == "USD"
    assert bill.total == Decimal("0.10")
    assert isinstance(bill.line_items[0].unit_price, Decimal)
    assert '"total":"0.10"' in bill.model_dump_json()


def test_bill_totals_must_reconcile() -> None:
    with pytest.raises(ValidationError, match=r"line amounts add up to 0\.10 USD, but subtotal is 0\.20"):
        Bill.model_validate(_bill(subtotal="0.20", total="0.20"))
    with pytest.raises(ValidationError, match=r"total is 0\.11"):
        Bill.model_validate(_bill(total="0.11"))


def test_bill_rejects_unknown_currency_and_float_nan() -> None:
    with pytest.raises(ValidationError, match="unknown ISO 4217"):
        Bill.model_validate(_bill(currency="XXQ"))
    with pytest.raises(ValidationError, match="finite"):
        Bill.model_validate(_bill(total=float("nan")))


async def _exercise_store(url: str) -> None:
    store = StateStore(url)
    await store.create_all()
    try:
        await store.put_binding("qbo", "k", erp_record_id="1", erp_version="0", content_hash="h1")
        await store.put_binding("qbo", "k", erp_record_id="1", erp_version="1", content_hash="h2")
        row = await store.get_binding("qbo", "k")
        assert row is not None
        assert (row.erp_version, row.content_hash) == ("1", "h2")
        assert await store.count_bindings("qbo") == 1
        from datetime import UTC, datetime

        await store.put_token("qbo", StoredToken("a", "r", datetime(2030, 1, 1, tzinfo=UTC)))
        token = await store.get_token("qbo")
        assert token is not None
        assert token.refresh_token == "r"
        await store.put_cursor("c", "1")
        await store.put_cursor("c", "2")
        assert await store.get_cursor("c") == "2"
    finally:
        await store.close()


async def test_state_store_sqlite(tmp_path: object) -> None:
    await _exercise_store(f"sqlite+aiosqlite:///{tmp_path}/state.db")


@pytest.mark.postgres
async def test_state_store_postgres(postgres_url: str) -> None:
    await _exercise_store(postgres_url)


def test_connection_credentials_from_a_mounted_secret_folder(tmp_path: Path) -> None:
    from ledgerflow.core.settings import ConnectionConfig

    (tmp_path / "client_secret").write_text("from-file\n")
    (tmp_path / "realm_id").write_text("123")
    (tmp_path / ".hidden").write_text("ignored")
    config = ConnectionConfig.model_validate(
        {"erp": "quickbooks", "credentials": {"realm_id": "inline"}, "credentials_dir": str(tmp_path)}
    )
    creds = {k: v.get_secret_value() for k, v in config.credentials.items()}
    assert creds == {"realm_id": "inline", "client_secret": "from-file"}
    assert config.credentials_mounted
    # Mounted only into the connection's own pods: every other service loads the routing without it.
    elsewhere = ConnectionConfig.model_validate({"erp": "xero", "credentials_dir": str(tmp_path / "missing")})
    assert not elsewhere.credentials_mounted
    assert elsewhere.credentials == {}


def test_kafka_security_from_settings(tmp_path: Path) -> None:
    from faststream.security import SASLScram512

    from ledgerflow.core.kafka import security_from_settings
    from ledgerflow.core.settings import Settings

    assert security_from_settings(Settings(kafka_security_protocol="PLAINTEXT")) == (None, {})
    sasl, extra = security_from_settings(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    )
    assert isinstance(sasl, SASLScram512)
    assert sasl.use_ssl
    assert extra == {}


@pytest.mark.postgres
async def test_state_tables_created_by_several_processes_at_once(postgres_url: str) -> None:
    stores = [StateStore(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(*(store.create_all() for store in stores))
        await stores[0].put_binding("c", "k", erp_record_id="1", erp_version=None, content_hash="h")
        assert await stores[3].count_bindings("c") == 1
    finally:
        for store in stores:
            await store.close()
