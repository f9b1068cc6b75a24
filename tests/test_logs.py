"""Structured JSON logs: the record's context on every line, refused webhooks logged, secrets masked, floods bounded."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ledgerflow.core.delivery import ConsumedRecord, DeadLetter, run_batch
from ledgerflow.core.logs import RepeatLimiter, configure_logging, log_context
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from tests.ingress.ingress_signing import RecordingPublisher
from tests.records import FakeRecord


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", "json", stream=stream)
    parsed: list[dict[str, Any]] = []

    class View(list[dict[str, Any]]):
        def __iter__(self) -> Iterator[dict[str, Any]]:
            parsed[:] = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
            return iter(parsed)

    try:
        yield View()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_every_line_is_json_with_the_bound_context(lines: list[dict[str, Any]]) -> None:
    log = logging.getLogger("ledgerflow.test")
    with log_context(tenant="acme", source="mercoa", event_id="ev-1", connection="qbo-main", attempt=2):
        log.info("booked %s", "bill-1")
    logging.getLogger("aiokafka.some").warning("a library line")
    first, second = list(lines)
    assert first["event"] == "booked bill-1"
    assert {k: first[k] for k in ("tenant", "source", "event_id", "connection", "attempt")} == {
        "tenant": "acme",
        "source": "mercoa",
        "event_id": "ev-1",
        "connection": "qbo-main",
        "attempt": 2,
    }
    assert first["level"] == "info"
    assert first["logger"] == "ledgerflow.test"
    assert first["timestamp"].endswith("Z")
    assert second["logger"] == "aiokafka.some"
    assert "tenant" not in second


def test_secrets_are_masked(lines: list[dict[str, Any]]) -> None:
    log = logging.getLogger("ledgerflow.test")
    log.warning("token refresh failed: Authorization: Bearer eyJhbGciOi.abc; client_secret=hunter2 password: pw1")
    (line,) = list(lines)
    assert "eyJhbGciOi" not in line["event"]
    assert "hunter2" not in line["event"]
    assert "pw1" not in line["event"]
    assert "Bearer ***" in line["event"]


def test_a_flood_of_one_message_is_bounded() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=5, window=60, clock=lambda: now[0])

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.conn", logging.WARNING, __file__, 1, msg, args, None)

    passed = sum(limiter.filter(record("Unable connect to node %s: %s", n, "refused")) for n in range(200))
    assert passed == 5
    now[0] = 61
    after = record("Unable connect to node %s: %s", 1, "refused")
    assert limiter.filter(after)
    assert after.suppressed == 195  # type: ignore[attr-defined]
    # The ingress's line per refused webhook is never limited.
    assert all(
        limiter.filter(logging.LogRecord("ledgerflow.ingress.webhooks", 30, __file__, 1, "webhook rejected", (), None))
        for _ in range(50)
    )


async def test_the_ingress_logs_every_refused_webhook_with_its_reason(lines: list[dict[str, Any]]) -> None:
    routing = Routing.model_validate({"tenants": {"acme": {"sources": {"mercoa": {"tokens": ["right-token"]}}}}})
    app = create_app(Settings(), routing, RecordingPublisher())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as client:
        for _ in range(8):
            refused = await client.post(
                "/webhooks/acme/mercoa",
                content=b"{}",
                headers={"content-type": "application/json", "authorization": "Bearer wrong"},
            )
            assert refused.status_code == 401
        missing = await client.post(
            "/webhooks/nobody/mercoa", content=b"{}", headers={"content-type": "application/json"}
        )
        assert missing.status_code == 404
    rejected = [line for line in lines if line["logger"] == "ledgerflow.ingress.webhooks"]
    assert len(rejected) == 9
    assert {(r["tenant"], r["source"], r["status"]) for r in rejected} == {
        ("acme", "mercoa", 401),
        ("nobody", "mercoa", 404),
    }
    assert all(r["reason"] for r in rejected)
    assert not any("wrong" in json.dumps(r) for r in rejected)


async def test_stage_lines_carry_the_record_context(lines: list[dict[str, Any]]) -> None:
    log = logging.getLogger("ledgerflow.test.stage")
    published: list[tuple[str, dict[str, str]]] = []

    async def handle(record: ConsumedRecord) -> None:
        log.info("mapping")
        raise DeadLetter("invalid-record", "line 2 has no amount")

    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        published.append((topic, headers))

    record = FakeRecord.of(
        "ledgerflow.raw.mercoa",
        7,
        "inv-1",
        b"{}",
        {"ce_id": "ev-42", "ce_tenant": "acme", "ce_source": "/tenants/acme/mercoa", "ce_type": "t"},
    )
    await run_batch([record], handle, stage="transform", dlq_topic="dlq", publish=publish, concurrency=1)
    assert published
    stage_lines = [line for line in lines if line["logger"].startswith("ledgerflow")]
    assert stage_lines
    for line in stage_lines:
        assert (line["tenant"], line["source"], line["event_id"], line["stage"]) == (
            "acme",
            "mercoa",
            "ev-42",
            "transform",
        )
