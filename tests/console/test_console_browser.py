"""The console in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Everything real but the ERP: the embedded broker over TCP, the audit service (consumer, API,
console), and a connector runtime whose ERP answers are scripted — the first bookings fail, later
ones succeed — so a failed record can be found, re-driven from the console and seen to succeed.

Screenshots of the main pages are kept as artefacts in ``$LEDGERFLOW_TEST_ARTEFACTS`` (default: a
``console-screenshots`` folder in pytest's temporary directory); their paths are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ledgerflow.audit.auth import KeyStore
from ledgerflow.audit.service import start_audit
from ledgerflow.audit.store import AuditStore, RecordFilter
from ledgerflow.audit.tables import sync_record_id
from ledgerflow.connectors.base import Booked, Connector, HandleContext, PermanentError
from ledgerflow.connectors.retry import RetryPolicy
from ledgerflow.connectors.runtime import ConnectorRuntime, register
from ledgerflow.contracts import Bill, CanonicalRecord, ErrorCode, Operation
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.kafka import broker_from_settings, ensure_topics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore
from tests.audit.api_helpers import CHEAP_HASHER

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.browser,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]


class FlakyErp(Connector):
    """An ERP whose first ``failures`` bookings are refused (vendor not found), then everything books."""

    erp = "http"
    supports = frozenset({"bill"})

    def __init__(self, name: str, routing: Routing, http: httpx.AsyncClient, state: StateStore, failures: int) -> None:
        super().__init__(name, routing.connections[name], http, state)
        self.failures = failures
        self.booked = 0

    async def check(self) -> None:
        return None

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        if self.failures > 0:
            self.failures -= 1
            raise PermanentError(
                ErrorCode.ERP_VALIDATION, "Vendor 'Acme Supplies' not found (account 000123456789)", http_status=400
            )
        self.booked += 1
        return Booked(Operation.CREATE, f"BILL-{self.booked}", "0", 201)


def _bill(tenant: str, source_id: str, number: str) -> Bill:
    return Bill.model_validate(
        {
            "canonical_id": f"{tenant}:mercoa:bill:{source_id}",
            "tenant": tenant,
            "source": "mercoa",
            "source_id": source_id,
            "source_event": "invoice.created",
            "vendor": {"name": "Acme Supplies"},
            "bill_number": number,
            "bill_date": "2026-11-30",
            "currency": "USD",
            "line_items": [{"line_number": 1, "amount": "1234.56"}],
            "subtotal": "1234.56",
            "total": "1234.56",
        }
    )


@dataclass
class Console:
    url: str
    redriver: str
    reader: str
    beta: str
    record_a1: str
    record_a2: str
    record_b1: str
    shots: Path


async def _wait_failed(store: AuditStore, want: int) -> None:
    for _ in range(300):
        page = await store.list_records(RecordFilter(outcome="failed"), limit=10)
        if len(page.records) >= want and await store.count("canonical_records") >= want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the failed results never reached the audit")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$LEDGERFLOW_TEST_ARTEFACTS`` or a folder in pytest's temporary directory."""
    folder = Path(os.environ.get("LEDGERFLOW_TEST_ARTEFACTS") or tmp_path_factory.mktemp("console-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module (Debian's binary; Playwright downloads nothing)."""
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="module")
async def console(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path_factory: pytest.TempPathFactory, shots: Path
) -> AsyncIterator[Console]:
    """One pipeline for the module's tests; each test works on its own records (A1, A2, B1)."""
    unique = uuid.uuid4().hex[:8]
    tmp_path = tmp_path_factory.mktemp("console")
    settings = Settings(
        topic_prefix=f"console{unique}",
        state_url=f"sqlite+aiosqlite:///{tmp_path}/audit.db",
        kafka_enable_idempotence=False if kafka_is_embedded else None,
        kafka_fetch_max_wait_ms=50,
    )
    await ensure_topics(kafka_bootstrap, settings.topics.all(), partitions=1)
    routing = Routing.model_validate(
        {
            "tenants": {"acme": {"connections": ["erp-a"]}, "beta": {"connections": ["erp-a"]}},
            "connections": {"erp-a": {"erp": "http", "objects": ["bill"]}},
        }
    )
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await state.create_all()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(state.close)
        http = await stack.enter_async_context(httpx.AsyncClient())
        broker = broker_from_settings(settings, kafka_bootstrap, embedded=kafka_is_embedded)

        async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
            await broker.publish(value, topic=topic, key=key, headers=headers)

        erp = FlakyErp("erp-a", routing, http, state, failures=3)
        runtime = ConnectorRuntime(erp, state, routing, publish, settings, RetryPolicy(attempts=1, park_delays=()))
        register(broker, runtime, max_records=50)
        await broker.start()
        stack.push_async_callback(broker.stop)
        url = await start_audit(
            stack, kafka_bootstrap, settings, embedded=kafka_is_embedded, group_id=f"audit.{unique}"
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=not kafka_is_embedded)
        await producer.start()
        stack.push_async_callback(producer.stop)
        for tenant, source_id, number in (
            ("acme", "in_a1", "INV-A1"),
            ("acme", "in_a2", "INV-A2"),
            ("beta", "in_b1", "INV-B1"),
        ):
            attrs = EventAttributes(
                id=f"evt-{source_id}", source=f"/tenants/{tenant}/mercoa", type="io.ledgerflow.bill.v1", tenant=tenant
            )
            # The webhook it came from, as the ingress wrote it (same trace as the canonical record).
            raw = attrs.derive(id=f"whk-{source_id}", type="invoice.created", subject=None)
            await producer.send_and_wait(
                settings.topics.raw("mercoa"),
                orjson.dumps({"eventType": "invoice.created", "data": {"id": source_id, "invoiceNumber": number}}),
                key=source_id.encode(),
                headers=[(k, v.encode()) for k, v in raw.to_headers().items()],
            )
            await producer.send_and_wait(
                settings.topics.canonical("bill"),
                _bill(tenant, source_id, number).model_dump_json().encode(),
                key=f"{tenant}:mercoa:bill:{source_id}".encode(),
                headers=[(k, v.encode()) for k, v in attrs.to_headers().items()],
            )
        # A transform-stage dead letter, so the dead-letters page has something to show.
        await producer.send_and_wait(
            settings.topics.dlq("transform"),
            b'{"id": "in_x", "amount": "not a number"}',
            key=b"in_x",
            headers=[
                (k, v.encode())
                for k, v in {
                    "ce_id": "raw-x",
                    "ce_tenant": "acme",
                    "ledgerflow_dlq_stage": "transform",
                    "ledgerflow_dlq_reason": "invalid-record",
                    "ledgerflow_dlq_detail": "total: Input should be a valid decimal",
                    "ledgerflow_dlq_original_topic": settings.topics.raw("mercoa"),
                }.items()
            ],
        )
        store = AuditStore(settings.state_url)
        stack.push_async_callback(store.close)
        await _wait_failed(store, 3)
        keys = KeyStore(store.engine, CHEAP_HASHER)
        yield Console(
            url=url,
            redriver=(await keys.create("operator", ["redrive"], ["acme"])).key,
            reader=(await keys.create("auditor", ["read"], ["acme"])).key,
            beta=(await keys.create("beta ops", ["redrive"], ["beta"])).key,
            record_a1=sync_record_id("acme:mercoa:bill:in_a1", "erp-a"),
            record_a2=sync_record_id("acme:mercoa:bill:in_a2", "erp-a"),
            record_b1=sync_record_id("beta:mercoa:bill:in_b1", "erp-a"),
            shots=shots,
        )


async def _login(browser: Any, url: str, key: str) -> Any:
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    page = await context.new_page()
    await page.goto(f"{url}/console/")
    assert page.url.endswith("/console/login")
    await page.get_by_label("API key or access token").fill(key)
    await page.keyboard.press("Enter")  # keyboard-usable: the form submits from the field
    await page.wait_for_url(f"{url}/console/")
    return page


async def test_operator_finds_redrives_and_sees_a_failed_record_succeed(console: Console, browser: Any) -> None:
    page = None
    try:
        page = await _login(browser, console.url, console.redriver)
        await page.get_by_label("Outcome").select_option("failed")
        rows = page.locator("#records tbody tr")
        await playwright_api.expect(rows).to_have_count(2)  # acme's two failures; beta's is not shown
        await playwright_api.expect(page.locator("#counts")).to_contain_text("failed 2")
        await page.screenshot(path=str(console.shots / "records.png"), full_page=True)

        await page.get_by_label("Search: source id, document number or event id").fill("INV-A1")
        await playwright_api.expect(rows).to_have_count(1)
        await page.get_by_role("link", name="acme:mercoa:bill:in_a1").click()
        await page.wait_for_url(f"{console.url}/console/records/{console.record_a1}")
        await playwright_api.expect(page.locator("#record-outcome")).to_have_text("failed")
        await playwright_api.expect(page.locator("main")).to_contain_text("Vendor 'Acme Supplies' not found")
        document = page.get_by_label("Source document JSON")
        await playwright_api.expect(document).to_contain_text('"invoiceNumber": "INV-A1"')
        assert "000123456789" not in await page.content()  # the ERP's answer is masked
        await page.screenshot(path=str(console.shots / "record-failed.png"), full_page=True)

        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.get_by_role("button", name="Re-drive to erp-a").click()
        await playwright_api.expect(page.locator("#record-outcome")).to_have_text("succeeded", timeout=20_000)
        await playwright_api.expect(page.locator("#status tbody tr")).to_have_count(2)
        await playwright_api.expect(page.locator("#erp-record-id")).to_have_text("BILL-1")
        await page.screenshot(path=str(console.shots / "record-succeeded.png"), full_page=True)

        await page.get_by_role("link", name="Dead letters").click()
        await playwright_api.expect(page.locator("main")).to_contain_text("invalid-record")
        await page.screenshot(path=str(console.shots / "dead-letters.png"), full_page=True)
        await page.get_by_role("link", name="Connections").click()
        await playwright_api.expect(page.locator("main table").first).to_contain_text("erp-a")
        # Control totals of acme this month: A1 booked, A2 still failed, so not balanced.
        await playwright_api.expect(page.locator("#balance")).to_have_text("not balanced")
        await playwright_api.expect(page.get_by_text("1 document(s) not booked")).to_be_visible()
        await page.screenshot(path=str(console.shots / "connections.png"), full_page=True)
    finally:
        if page is not None:
            await page.context.close()
    print(f"console screenshots: {console.shots}")


async def test_read_only_key_sees_no_redrive_button_and_gets_403(console: Console, browser: Any) -> None:
    page = None
    try:
        page = await _login(browser, console.url, console.reader)
        # Keyboard first: the first Tab reaches the skip link, which moves focus to the content.
        await page.keyboard.press("Tab")
        await playwright_api.expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        await page.keyboard.press("Enter")
        await playwright_api.expect(page.locator("main")).to_be_focused()
        await page.goto(f"{console.url}/console/records/{console.record_a2}")
        await playwright_api.expect(page.locator("#record-outcome")).to_have_text("failed")
        await playwright_api.expect(page.get_by_role("button", name="Re-drive to erp-a")).to_have_count(0)
        await playwright_api.expect(
            page.get_by_role("button", name="Re-drive all failed matching records")
        ).to_have_count(0)
        await page.screenshot(path=str(console.shots / "record-read-only.png"), full_page=True)
    finally:
        if page is not None:
            await page.context.close()
    async with httpx.AsyncClient(base_url=console.url, headers={"authorization": f"Bearer {console.reader}"}) as api:
        answer = await api.post(f"/v1/sync-records/{console.record_a2}/retry")
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"


async def test_a_key_of_one_tenant_cannot_see_another(console: Console, browser: Any) -> None:
    page = None
    try:
        page = await _login(browser, console.url, console.beta)
        rows = page.locator("#records tbody tr")
        await playwright_api.expect(rows).to_have_count(1)
        await playwright_api.expect(rows).to_contain_text("beta:mercoa:bill:in_b1")
        await playwright_api.expect(page.get_by_label("Tenant")).not_to_contain_text("acme")
        answer = await page.goto(f"{console.url}/console/records/{console.record_a1}")
        assert answer is not None
        assert answer.status == 404
        await playwright_api.expect(page.locator("main")).to_contain_text("Not found")
        await page.screenshot(path=str(console.shots / "other-tenant-404.png"), full_page=True)
    finally:
        if page is not None:
            await page.context.close()
    async with httpx.AsyncClient(base_url=console.url, headers={"authorization": f"Bearer {console.beta}"}) as api:
        assert (await api.get(f"/v1/sync-records/{console.record_a1}")).status_code == 404
        assert (await api.get("/v1/sync-records", params={"tenant": "acme"})).status_code == 404
