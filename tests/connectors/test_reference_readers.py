"""ERP readers (issue 19, first part) against the QuickBooks and Xero sandboxes and the real broker.

A first sync reads every seeded reference record and publishes it to ``<prefix>.inbound.<kind>.v1``
with ``ce_direction: inbound``; a vendor and a GL account created afterwards are read by the second
sync and nothing else is; a new reader on the same state store resumes from the cursors; pages of
two records are read to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker
from typer.testing import CliRunner

from ledgerflow.app.cli import app as cli_app
from ledgerflow.connectors.base import Connector
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.connectors.quickbooks import sandbox as qbo_sandbox
from ledgerflow.connectors.quickbooks.reader import QuickBooksReader
from ledgerflow.connectors.reference import KafkaReferencePublisher, ReferenceReader, ReferenceSync, SyncReport
from ledgerflow.connectors.sandbox_kit import serve
from ledgerflow.connectors.xero import XeroConnector
from ledgerflow.connectors.xero import sandbox as xero_sandbox
from ledgerflow.connectors.xero.reader import XeroReader
from ledgerflow.contracts import OBJECT_MODELS
from ledgerflow.contracts.reference import INBOUND_KINDS, ReferenceRecord
from ledgerflow.contracts.topics import Topics
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.outbound.transport import worker_http_client
from ledgerflow.core.settings import ConnectionConfig, Settings
from ledgerflow.core.state import StateStore

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

PAGE_SIZE = 2


@dataclass
class Erp:
    """One ERP under test: how to build its connector and reader, what it is seeded with, how to add records."""

    name: str
    connector: Callable[[httpx.AsyncClient, StateStore], Connector]
    reader: Callable[[Connector], ReferenceReader]
    seeded: dict[str, int]
    add_vendor: Callable[[Connector, str], Awaitable[None]]
    add_gl_account: Callable[[Connector, str, str], Awaitable[None]]


async def _qbo_vendor(connector: Connector, name: str) -> None:
    assert isinstance(connector, QuickBooksConnector)
    await connector.client().request(
        "POST", "/vendor", operation="vendor.create", params={"minorversion": "75"}, json_body={"DisplayName": name}
    )


async def _qbo_account(connector: Connector, number: str, name: str) -> None:
    assert isinstance(connector, QuickBooksConnector)
    body = {"Name": name, "AcctNum": number, "AccountType": "Expense"}
    await connector.client().request(
        "POST", "/account", operation="account.create", params={"minorversion": "75"}, json_body=body
    )


async def _xero_vendor(connector: Connector, name: str) -> None:
    assert isinstance(connector, XeroConnector)
    body = {"Contacts": [{"Name": name, "IsSupplier": True}]}
    await connector.client().request("PUT", "/Contacts", operation="contacts.create", json_body=body)


async def _xero_account(connector: Connector, code: str, name: str) -> None:
    assert isinstance(connector, XeroConnector)
    body = {"Code": code, "Name": name, "Type": "EXPENSE"}
    await connector.client().request("PUT", "/Accounts", operation="accounts.create", json_body=body)


@pytest.fixture(params=["quickbooks", "xero"])
async def erp(request: pytest.FixtureRequest, shared_dir: Path) -> AsyncIterator[Erp]:
    if request.param == "quickbooks":
        app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd", seed_parties=True)
        async with serve(app) as url:
            config = qbo_sandbox.sandbox_connection(
                ConnectionConfig(erp="quickbooks", options={"rate_limit_per_minute": 6000}), url
            )
            yield Erp(
                "quickbooks",
                lambda http, state: QuickBooksConnector("qbo", config, http, state),
                lambda c: QuickBooksReader(c, page_size=PAGE_SIZE),  # type: ignore[arg-type]
                {"vendor": 3, "customer": 2, "project": 1, "gl_account": 6, "tax_rate": 5, "tracking": 4, "payment": 0},
                _qbo_vendor,
                _qbo_account,
            )
    else:
        app = xero_sandbox.create_app(
            spec_path=shared_dir / "specs" / "xero_accounting.yaml", seed_parties=True, minute_limit=10_000
        )
        async with serve(app) as url:
            config = xero_sandbox.sandbox_connection(
                ConnectionConfig(erp="xero", options={"rate_limit_per_minute": 6000}), url
            )
            yield Erp(
                "xero",
                lambda http, state: XeroConnector("xero", config, http, state),
                lambda c: XeroReader(c, page_size=PAGE_SIZE),  # type: ignore[arg-type]
                {"vendor": 3, "customer": 1, "gl_account": 6, "tax_rate": 3, "tracking": 2, "payment": 0, "project": 1},
                _xero_vendor,
                _xero_account,
            )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with worker_http_client("httpx", timeout=httpx.Timeout(5.0)) as client:
        yield client


@pytest.fixture
async def broker(kafka_bootstrap: str) -> AsyncIterator[tuple[KafkaBroker, Topics]]:
    topics = Topics(f"refs{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka_bootstrap, [topics.inbound(kind) for kind in INBOUND_KINDS], partitions=1)
    kafka = broker_from_settings(Settings(), kafka_bootstrap, embedded=True)
    await kafka.connect()
    try:
        yield kafka, topics
    finally:
        await kafka.stop()


async def _consume(bootstrap: str, topics: Topics, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *[topics.inbound(kind) for kind in INBOUND_KINDS],
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(messages) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(records)
        # Anything beyond the expected count would be a duplicate: give it a moment to show up.
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            messages.extend(records)
    finally:
        await consumer.stop()
    return messages


async def test_incremental_reads_publish_each_record_once(
    erp: Erp,
    http: httpx.AsyncClient,
    broker: tuple[KafkaBroker, Topics],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    kafka, topics = broker
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await state.create_all()
    try:

        def new_sync() -> tuple[Connector, ReferenceSync]:
            connector = erp.connector(http, state)
            reader = erp.reader(connector)
            return connector, ReferenceSync(reader, state, KafkaReferencePublisher(kafka), topics, tenant="acme")

        connector, sync = new_sync()
        first = await sync.sync_once()
        assert first.published == erp.seeded
        # Pages of two: more reads than sources, every seeded record once.
        assert first.reads > len(sync.reader.sources)

        await erp.add_vendor(connector, "Acme Rebar & Mesh")
        await erp.add_gl_account(connector, "6020", "Rebar")
        second = await sync.sync_once()
        assert second.published == {**dict.fromkeys(erp.seeded, 0), "vendor": 1, "gl_account": 1}

        # A restart: new connector and reader, same state store.
        connector, sync = new_sync()
        assert (await sync.sync_once()).total == 0
        await erp.add_vendor(connector, "Delta Drywall")
        third = await sync.sync_once()
        assert third.published["vendor"] == 1
        assert third.total == 1

        expected = sum(erp.seeded.values()) + 3
        messages = await _consume(kafka_bootstrap, topics, expected)
        assert len(messages) == expected
        keys = Counter(m.key.decode() for m in messages)
        assert max(keys.values()) == 1, "a record was published twice"
        by_kind = Counter(json.loads(m.value)["kind"] for m in messages)
        assert by_kind["vendor"] == erp.seeded["vendor"] + 2
        assert by_kind["gl_account"] == erp.seeded["gl_account"] + 1
        for message in messages:
            headers = {k: v.decode() for k, v in message.headers}
            assert headers["ce_direction"] == "inbound"
            record = ReferenceRecord.model_validate_json(message.value)
            assert message.topic == topics.inbound(record.kind)
            assert headers["ce_type"] == f"io.ledgerflow.inbound.{record.kind}.v1"
            assert record.erp == erp.name
        names = {json.loads(m.value)["name"] for m in messages}
        assert {"Acme Rebar & Mesh", "Rebar", "Delta Drywall"} <= names
    finally:
        await state.close()


async def test_a_page_reads_at_most_the_page_size(erp: Erp, http: httpx.AsyncClient, tmp_path: Path) -> None:
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await state.create_all()
    try:
        reader = erp.reader(erp.connector(http, state))
        vendors = next(s for s in reader.sources if s.kind == "vendor")
        page = await reader.read(vendors, None, PAGE_SIZE)
        assert len(page.records) == PAGE_SIZE
        assert not page.complete
        rest = await reader.read(vendors, None, 10)
        assert len(rest.records) == erp.seeded["vendor"]
        assert rest.complete
        stamps = [r.updated_at for r in rest.records]
        assert all(s is not None for s in stamps)
    finally:
        await state.close()


def test_inbound_topics_are_not_outbound_topics() -> None:
    topics = Topics("ledgerflow")
    inbound = {topics.inbound(kind) for kind in INBOUND_KINDS}
    assert inbound == {f"ledgerflow.inbound.{kind}.v1" for kind in INBOUND_KINDS}
    assert inbound.isdisjoint(topics.canonical(o) for o in OBJECT_MODELS)
    assert inbound <= set(topics.all())


@contextlib.contextmanager
def _sandbox_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` on a loopback port from a thread of its own (the CLI runs its own event loop)."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        box["stop"] = asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        async with serve(app) as url:
            box["url"] = url
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(20), "sandbox did not start"
    try:
        yield str(box["url"])
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def test_sync_reference_command_once_resumes_from_the_cursor(
    shared_dir: Path, kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd")
    with _sandbox_in_thread(app) as url:
        credentials = qbo_sandbox.DEFAULT_CREDENTIALS
        routing = {
            "tenants": {"acme": {"sources": {}, "connections": ["qbo-main"]}},
            "connections": {
                "qbo-main": {
                    "erp": "quickbooks",
                    "base_url": url,
                    "credentials": {
                        "client_id": credentials.client_id,
                        "client_secret": credentials.client_secret,
                        "refresh_token": credentials.refresh_token,
                        "realm_id": credentials.realm_id,
                        "token_url": url + qbo_sandbox.TOKEN_PATH,
                    },
                }
            },
        }
        routing_file = tmp_path / "routing.yaml"
        routing_file.write_text(json.dumps(routing))
        monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(routing_file))
        monkeypatch.setenv("LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        monkeypatch.setenv("LEDGERFLOW_STATE_URL", f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        monkeypatch.setenv("LEDGERFLOW_TOPIC_PREFIX", f"cli{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("LEDGERFLOW_TOPIC_PARTITIONS", "1")
        if kafka_is_embedded:
            monkeypatch.setenv("LEDGERFLOW_KAFKA_ENABLE_IDEMPOTENCE", "false")
        runner = CliRunner()
        first = runner.invoke(cli_app, ["sync-reference", "--connection", "qbo-main", "--once", "--page-size", "2"])
        assert first.exit_code == 0, first.output
        # Accounts 6, tax codes 3 + rates 2, classes 2 + departments 2; no vendors without seed_parties.
        assert "15 record(s) published" in first.output
        again = runner.invoke(cli_app, ["sync-reference", "--connection", "qbo-main", "--once"])
        assert again.exit_code == 0, again.output
        assert "0 record(s) published" in again.output
        unknown = runner.invoke(cli_app, ["sync-reference", "--connection", "nope", "--once"])
        assert unknown.exit_code == 2


class _Collected:
    """Publisher that keeps what it was given (no broker: paging behaviour only)."""

    def __init__(self) -> None:
        self.records: list[ReferenceRecord] = []

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        self.records.append(ReferenceRecord.model_validate_json(value))


async def test_a_record_changed_while_pages_are_read_is_not_lost(
    shared_dir: Path, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """An account renamed after the first page moves behind the others; nothing is skipped."""
    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd")
    store = app.state.sandbox.store
    async with serve(app) as url:
        config = qbo_sandbox.sandbox_connection(
            ConnectionConfig(erp="quickbooks", options={"rate_limit_per_minute": 6000}), url
        )
        state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        await state.create_all()
        try:
            connector = QuickBooksConnector("qbo", config, http, state)
            reader = QuickBooksReader(connector, page_size=PAGE_SIZE)
            accounts = next(s for s in reader.sources if s.entity == "Account")
            original = reader.read
            pages = 0

            async def read_and_rename(source: Any, since: Any, limit: int) -> Any:
                nonlocal pages
                page = await original(source, since, limit)
                pages += 1
                if pages == 1:
                    first = page.records[0].erp_record
                    await asyncio.sleep(1.05)  # QuickBooks stamps to the second
                    answer = await connector.client().request(
                        "POST",
                        "/account",
                        operation="account.update",
                        params={"minorversion": "75"},
                        json_body={"Id": first["Id"], "SyncToken": "0", "sparse": True, "Name": "Job Materials (old)"},
                    )
                    assert answer.status_code == 200
                return page

            reader.read = read_and_rename  # type: ignore[method-assign]
            collected = _Collected()
            sync = ReferenceSync(reader, state, collected, Topics("t"), tenant="acme")
            report = SyncReport()
            await sync.sync_source(accounts, report)
            ids = [r.erp_id for r in collected.records]
            assert set(ids) == set(store.records["account"]), "an account was skipped"
            renamed = [r for r in collected.records if r.name == "Job Materials (old)"]
            assert len(renamed) == 1, "the renamed account is published in its new version"
            assert len(ids) == len(store.records["account"]) + 1
            assert report.reads >= 3
        finally:
            await state.close()


async def test_a_failed_pass_is_counted_and_keeps_the_progress_made(
    shared_dir: Path, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    from prometheus_client import REGISTRY

    from ledgerflow.connectors.base import PermanentError
    from ledgerflow.contracts.errors import ErrorCode

    app = qbo_sandbox.create_app(spec_path=shared_dir / "specs" / "Finance.xsd")
    async with serve(app) as url:
        config = qbo_sandbox.sandbox_connection(
            ConnectionConfig(erp="quickbooks", options={"rate_limit_per_minute": 6000}), url
        )
        state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        await state.create_all()
        try:
            connection = f"qbo-{uuid.uuid4().hex[:6]}"
            reader = QuickBooksReader(QuickBooksConnector(connection, config, http, state), page_size=PAGE_SIZE)
            original = reader.read

            async def fail_on_tax_codes(source: Any, since: Any, limit: int) -> Any:
                if source.entity == "TaxCode":
                    raise PermanentError(ErrorCode.ERP_VALIDATION, "refused")
                return await original(source, since, limit)

            reader.read = fail_on_tax_codes  # type: ignore[method-assign]
            collected = _Collected()
            sync = ReferenceSync(reader, state, collected, Topics("t"), tenant="acme")
            with pytest.raises(PermanentError):
                await sync.sync_once()
            labels = {"connection": connection, "outcome": "failed"}
            assert REGISTRY.get_sample_value("ledgerflow_reference_syncs_total", labels) == 1
            accounts = {"connection": connection, "kind": "gl_account"}
            assert REGISTRY.get_sample_value("ledgerflow_reference_records_total", accounts) == 6
            # The next pass resumes: accounts are not published again.
            reader.read = original  # type: ignore[method-assign]
            report = await sync.sync_once()
            assert report.published == {
                "vendor": 0,
                "customer": 0,
                "project": 0,
                "gl_account": 0,
                "tax_rate": 5,
                "tracking": 4,
                "payment": 0,
            }
            ok = {"connection": connection, "outcome": "ok"}
            assert REGISTRY.get_sample_value("ledgerflow_reference_syncs_total", ok) == 1
        finally:
            await state.close()
