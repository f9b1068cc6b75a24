"""OpenTelemetry traces: off by default at no cost, and one webhook is one trace across the Kafka hops.

The end-to-end test runs the in-process stack (ingress, transformer, QuickBooks and Xero
connectors, audit, ERP sandboxes) against the real broker over TCP with spans collected in memory:
every span of the sender's trace hangs off the sender's span, through the ingress request, the
ingress's write, the transform of the raw event, each connection's booking, the ERP HTTP calls
and the result publish, down to the audit storing each result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.contracts import Outcome
from ledgerflow.contracts.events import raw_event_attributes, valid_traceparent
from ledgerflow.core import tracing
from ledgerflow.core.settings import Settings, demo_routing

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
SENDER_TRACEPARENT = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test only, every finished span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(tracing.text_keys_processor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing(provider)
    try:
        yield exporter
    finally:
        tracing.disable_tracing()
        provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
    ],
)
def test_tracing_is_requested_only_by_the_standard_variables(environ: dict[str, str], requested: bool) -> None:
    assert tracing.tracing_requested(environ) is requested


def test_off_by_default_nothing_is_instrumented() -> None:
    assert not tracing.configure_tracing("ledgerflow-test", environ={})
    assert not tracing.tracing_enabled()

    class Record:
        topic, partition, offset, headers = "t", 0, 1, [("traceparent", SENDER_TRACEPARENT.encode())]

    # One shared no-op per record, no OpenTelemetry object; headers left alone; nothing wrapped.
    assert tracing.record_span("transform", Record()) is tracing.record_span("connector", Record())
    headers = {"traceparent": SENDER_TRACEPARENT}
    with tracing.publish_span("topic", headers):
        pass
    assert headers == {"traceparent": SENDER_TRACEPARENT}
    assert tracing.broker_middlewares() == ()
    app = object()
    assert tracing.instrument_asgi(app) is app
    client = httpx.AsyncClient()
    assert tracing.instrument_http_client(client) is client


def test_unsupported_exporter_is_a_configuration_error() -> None:
    with pytest.raises(tracing.TracingUnavailable, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing.configure_tracing("ledgerflow-test", environ={"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.tracing_enabled()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (SENDER_TRACEPARENT, True),
        (f" {SENDER_TRACEPARENT} ", True),
        (f"01-{SENDER_TRACE}-{SENDER_SPAN}-01-future", True),
        (f"00-{SENDER_TRACE}-{SENDER_SPAN}-01-extra", False),
        (f"ff-{SENDER_TRACE}-{SENDER_SPAN}-01", False),
        (f"00-{'0' * 32}-{SENDER_SPAN}-01", False),
        (f"00-{SENDER_TRACE}-{'0' * 16}-01", False),
        (f"00-{SENDER_TRACE.upper()}-{SENDER_SPAN}-01", False),
        ("garbage", False),
        ("", False),
        (None, False),
    ],
)
def test_valid_traceparent_follows_w3c_trace_context(value: str | None, valid: bool) -> None:
    assert (valid_traceparent(value) is not None) is valid


def test_raw_event_continues_the_senders_trace_or_starts_one() -> None:
    def raw(traceparent: str) -> str:
        return raw_event_attributes(
            id="e", tenant="t", source="mercoa", event_type="invoice.created", record_id="r", traceparent=traceparent
        ).traceparent

    assert raw(SENDER_TRACEPARENT) == SENDER_TRACEPARENT
    fresh = raw("00-bogus")
    assert valid_traceparent(fresh) == fresh
    assert SENDER_TRACE not in fresh


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        span = by_id[parent.span_id]
        found.append(span)
        parent = span.parent
    return found


@pytest.mark.kafka
async def test_one_webhook_is_one_trace_across_the_kafka_hops(
    kafka_bootstrap: str,
    kafka_is_embedded: bool,
    tmp_path: Path,
    mercoa_sample: bytes,
    unique: str,
    spans: InMemorySpanExporter,
) -> None:
    prefix = f"otel{unique}"
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=prefix,
        topic_partitions=3,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    canonical_id = f"demo:mercoa:bill:{orjson.loads(mercoa_sample)['invoice']['id']}"
    async with run_stack(settings, demo_routing()) as stack:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(
                f"{stack.ingress_url}/webhooks/demo/mercoa",
                content=mercoa_sample,
                headers={
                    "content-type": "application/json",
                    "authorization": "Bearer demo-token",
                    "traceparent": SENDER_TRACEPARENT,
                },
            )
        assert resp.status_code == 200, resp.text
        results = await demo.collect_results(
            stack.bootstrap_servers, settings.topics.results, canonical_id, ["quickbooks", "xero"], timeout=60
        )
        assert {name: r.outcome for name, r in results.items()} == {
            "quickbooks": Outcome.SUCCEEDED,
            "xero": Outcome.SUCCEEDED,
        }
        # The audit stores both results; its spans end once each result is stored.
        for _ in range(100):
            audited = [s for s in spans.get_finished_spans() if s.name == f"audit {settings.topics.results}"]
            if len([s for s in audited if s.context.trace_id == int(SENDER_TRACE, 16)]) == 2:
                break
            await asyncio.sleep(0.1)

    trace = [s for s in spans.get_finished_spans() if s.context.trace_id == int(SENDER_TRACE, 16)]
    by_id = {s.context.span_id: s for s in trace}
    assert len(by_id) == len(trace)

    # One connected tree, rooted at the sender's span: every span's parent is in the trace or is the sender's.
    sender = int(SENDER_SPAN, 16)
    orphans = [
        s.name for s in trace if s.parent is None or (s.parent.span_id not in by_id and s.parent.span_id != sender)
    ]
    assert orphans == []

    def named(name: str) -> list[ReadableSpan]:
        return [s for s in trace if s.name == name]

    (request,) = [s for s in trace if s.kind is SpanKind.SERVER and _parent_id(s) == sender]
    assert request.name == "POST /webhooks/{tenant}/mercoa"  # the route template, never the path
    (ingress_write,) = named(f"{settings.topics.raw('mercoa')} publish")
    (transform,) = named(f"transform {settings.topics.raw('mercoa')}")
    bookings = named(f"connector {settings.topics.canonical('bill')}")
    audits = named(f"audit {settings.topics.results}")
    # QuickBooks and Xero, each its own consumer group; the span carries the record's log context.
    assert sorted(str(b.attributes["ledgerflow.connection"]) for b in bookings if b.attributes) == [
        "quickbooks",
        "xero",
    ]
    assert transform.attributes is not None
    assert transform.attributes["ledgerflow.tenant"] == "demo"
    assert transform.attributes["ledgerflow.source"] == "mercoa"
    assert transform.attributes["cloudevents.event_id"] == resp.json()["event_id"]
    assert len(audits) == 2
    # FastStream's spans name the Kafka key (the canonical id) as text, not bytes.
    assert {
        b.attributes["messaging.kafka.message.key"]
        for b in named(f"{settings.topics.canonical('bill')} create")
        if b.attributes
    } == {canonical_id}
    assert request in _ancestors(ingress_write, by_id)
    assert ingress_write in _ancestors(transform, by_id)
    for booking in bookings:
        assert transform in _ancestors(booking, by_id)
        erp_calls = [s for s in trace if s.kind is SpanKind.CLIENT and booking in _ancestors(s, by_id)]
        assert erp_calls, f"no ERP HTTP span under {booking.name}"
        # FastStream's producer spans: "<topic> create" (its context goes in the header) and "<topic> publish".
        (result_write,) = [
            s for s in named(f"{settings.topics.results} create") if _parent_id(s) == booking.context.span_id
        ]
        assert [s for s in named(f"{settings.topics.results} publish") if _parent_id(s) == result_write.context.span_id]
        (audit,) = [s for s in audits if _parent_id(s) == result_write.context.span_id]
        assert audit.kind is SpanKind.CONSUMER


@pytest.mark.parametrize(
    ("sent", "continued"),
    [(SENDER_TRACEPARENT, True), (f"00-{SENDER_TRACE}-{'0' * 16}-01", False), (None, False)],
)
async def test_ingress_continues_the_senders_traceparent_with_tracing_off(sent: str | None, continued: bool) -> None:
    from ledgerflow.core.settings import Routing
    from ledgerflow.ingress.app import create_app
    from tests.ingress.ingress_signing import NEW, SECRETS, TENANT, RecordingPublisher, payload, routing_dict

    publisher = RecordingPublisher()
    app = create_app(Settings(), Routing.model_validate(routing_dict(TENANT)), publisher)
    headers = {"authorization": f"Bearer {SECRETS['mercoa'][NEW]}", "content-type": "application/json"}
    if sent is not None:
        headers["traceparent"] = sent
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        resp = await client.post(
            f"/webhooks/{TENANT}/mercoa", content=orjson.dumps(payload("mercoa", "i")), headers=headers
        )
    assert resp.status_code == 200, resp.text
    ((_, _, _, written),) = publisher.records
    assert valid_traceparent(written["traceparent"]) == written["traceparent"]
    assert (written["traceparent"] == SENDER_TRACEPARENT) is continued
    assert (SENDER_TRACE in written["traceparent"]) is continued


def test_a_dead_lettered_record_span_is_an_error_under_the_records_trace(spans: InMemorySpanExporter) -> None:
    class Record:
        topic, partition, offset, headers = (
            "ledgerflow.raw.mercoa",
            2,
            7,
            [("traceparent", SENDER_TRACEPARENT.encode())],
        )

    with tracing.record_span("transform", Record()):
        tracing.dead_lettered("invalid-record", "lines.0.amount: not a decimal")
    (span,) = spans.get_finished_spans()
    assert span.name == "transform ledgerflow.raw.mercoa"
    assert span.kind is SpanKind.CONSUMER
    assert span.context.trace_id == int(SENDER_TRACE, 16)
    assert _parent_id(span) == int(SENDER_SPAN, 16)
    assert span.attributes is not None
    assert span.attributes["ledgerflow.dlq.reason"] == "invalid-record"
    assert span.attributes["messaging.kafka.offset"] == 7
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "dead-lettered: invalid-record: lines.0.amount: not a decimal"
