"""PostgreSQL unreachable for 10 seconds while webhooks flow: nothing lost, nothing booked twice.

The stack's state store and audit store are on PostgreSQL behind a TCP proxy in this process;
after a third of the webhooks the proxy cuts every connection and refuses new ones for 10 s, then
lets them through again. The transformer and the connector fail their batches meanwhile (binder,
enrichment state) and get them redelivered; every accepted webhook must end as one bill.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ledgerflow.app.stack import RunningStack, run_stack
from ledgerflow.core.settings import Routing, Settings
from tests.databases import fresh_database, postgres_up
from tests.faults.report import ScenarioReport, record_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.postgres]

TOKEN = "pg-outage-token"
WEBHOOKS = 60
OUTAGE_SECONDS = 10.0


class CuttableProxy:
    """A TCP proxy to PostgreSQL whose connections can be cut and refused for a while."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target_port = target_port
        self.port = 0
        self.open = True
        self.refused = 0
        self.cut_connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Close every live connection; refuse new ones until :meth:`restore`."""
        self.open = False
        self.cut_connections += len(self._writers) // 2
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        """Let connections through again."""
        self.open = True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@pytest.fixture
async def proxied_postgres() -> AsyncIterator[tuple[str, CuttableProxy]]:
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    proxy = CuttableProxy()
    await proxy.start()
    try:
        async with fresh_database("ledgerflow_pgoutage") as url:
            yield url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
    finally:
        await proxy.stop()


def _body(sample: bytes, number: str) -> bytes:
    payload = orjson.loads(sample)
    invoice = copy.deepcopy(payload["invoice"])
    invoice.update(id=f"in_{number}", invoiceNumber=number, amount=orjson.Fragment("15.00"))
    invoice["lineItems"] = invoice["lineItems"][:1]
    invoice["lineItems"][0].update(amount=orjson.Fragment("15.00"), unitPrice=orjson.Fragment("15.00"), quantity=1)
    payload["invoice"] = invoice
    return orjson.dumps(payload)


async def _bills(stack: RunningStack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{stack.sandboxes['quickbooks']}/_sandbox/records", params={"kind": "bill"})
    response.raise_for_status()
    records: list[dict[str, Any]] = response.json()["records"]
    return records


async def test_postgres_unreachable_for_10_seconds_loses_and_duplicates_nothing(
    kafka_bootstrap: str,
    kafka_is_embedded: bool,
    tmp_path: Path,
    mercoa_sample: bytes,
    proxied_postgres: tuple[str, CuttableProxy],
) -> None:
    state_url, proxy = proxied_postgres
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"pgout{tag}",
        topic_partitions=3,
        state_url=state_url,
    )
    routing = Routing.model_validate(
        {
            "tenants": {"faults": {"sources": {"mercoa": {"tokens": [TOKEN]}}, "connections": ["qbo"]}},
            "connections": {
                "qbo": {
                    "erp": "quickbooks",
                    "objects": ["bill", "vendor"],
                    "options": {"rate_limit_per_minute": 600_000, "max_concurrency": 16},
                }
            },
        }
    )
    numbers = [f"PG{tag}-{n:03d}" for n in range(WEBHOOKS)]
    accepted: set[str] = set()
    async with run_stack(settings, routing) as stack, httpx.AsyncClient(timeout=30) as http:
        cut_at = None
        for n, number in enumerate(numbers):
            if n == WEBHOOKS // 3:
                proxy.cut()
                cut_at = time.monotonic()
            if cut_at is not None and proxy.open is False and time.monotonic() - cut_at >= OUTAGE_SECONDS:
                proxy.restore()
            response = await http.post(
                f"{stack.ingress_url}/webhooks/faults/mercoa",
                content=_body(mercoa_sample, number),
                headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
            )
            if response.is_success:
                accepted.add(number)
            await asyncio.sleep(OUTAGE_SECONDS / WEBHOOKS * 2)  # spread the traffic over the outage
        assert cut_at is not None
        if not proxy.open:
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
            proxy.restore()
        deadline = time.monotonic() + 90
        per_number: dict[str, int] = {}
        while time.monotonic() < deadline:
            per_number = {}
            for bill in await _bills(stack):
                number = bill["record"].get("DocNumber")
                if number in accepted:
                    per_number[number] = per_number.get(number, 0) + 1
            if set(per_number) == accepted:
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)
        per_number = {}
        for bill in await _bills(stack):
            number = bill["record"].get("DocNumber")
            if number in accepted:
                per_number[number] = per_number.get(number, 0) + 1
    report = record_scenario(
        ScenarioReport(
            "PostgreSQL unreachable for 10 s",
            accepted=len(accepted),
            booked=len(per_number),
            dead_lettered=0,
            lost=len(accepted - set(per_number)),
            duplicated=sum(n - 1 for n in per_number.values()),
            note=f"{proxy.cut_connections} connections cut, {proxy.refused} refused during the outage",
        )
    )
    assert proxy.cut_connections + proxy.refused > 0, "the outage must have been felt"
    assert len(accepted) == WEBHOOKS, "the ingress needs no database: every webhook is accepted"
    assert report.lost == 0
    assert report.duplicated == 0
