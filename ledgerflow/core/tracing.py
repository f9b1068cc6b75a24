"""OpenTelemetry traces: one webhook is one trace, from the sender's span to the ERP call and the result.

Off by default, at no cost: tracing is on only when the standard variables ask for it
(:func:`tracing_requested`): ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
or ``OTEL_TRACES_EXPORTER`` set, and ``OTEL_SDK_DISABLED`` not ``true``. Off, no OpenTelemetry
module is imported, brokers, HTTP clients and ASGI apps are left as they are, and each consumed
record costs one flag check (:func:`record_span` returns a shared no-op context).

On (:func:`configure_tracing`, called by every ``ledgerflow`` command, needs the ``otel`` extra):

* every ASGI app ledgerflow serves (ingress, audit, sandboxes) is wrapped in OpenTelemetry's ASGI
  middleware — the one FastAPI's instrumentation installs; the ingress's webhook fast lane skips
  FastAPI's middleware stack, so the wrapping is around the whole app — which continues the
  sender's ``traceparent`` (server span);
* the ingress's write to Kafka is a producer span (:func:`publish_span`) whose context replaces the
  record's ``traceparent`` header;
* FastStream's OpenTelemetry middleware is on every worker's broker (:func:`broker_middlewares`):
  each publish is a producer span and writes its context into the record's ``traceparent``. Its
  consume span covers a whole *batch* (a trace of its own, linked to each record's context), so
  each record gets its own consumer span (:func:`record_span`, in
  :func:`ledgerflow.core.delivery.run_batch`) whose parent is the record's ``traceparent``: the
  transform of one raw event, the booking of one canonical record on one connection, the audit
  of one result;
* the workers' shared HTTP client is instrumented (:func:`instrument_http_client`, httpx over the
  aiohttp transport): the ERP call is a client span, child of the booking, and the ERP receives
  the ``traceparent``.

Exporter, sampler, resource and propagators follow the standard ``OTEL_*`` variables:
``OTEL_TRACES_EXPORTER`` (``otlp`` default, ``console``, ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` default, ``http/protobuf``), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``,
``OTEL_PROPAGATORS`` and the ``OTEL_BSP_*`` batch settings (docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ledgerflow.core.settings import ConfigError

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

__all__ = [
    "TracingUnavailable",
    "broker_middlewares",
    "configure_tracing",
    "dead_lettered",
    "disable_tracing",
    "enable_tracing",
    "instrument_asgi",
    "instrument_http_client",
    "publish_span",
    "record_span",
    "text_keys_processor",
    "tracing_enabled",
    "tracing_requested",
]

_TRACE_HEADER = "traceparent"
"""W3C Trace Context header (also :data:`ledgerflow.contracts.headers.TRACEPARENT`)."""

_NOT_TRACED = ("/healthz", "/readyz", "/metrics")
"""Probe and scrape paths: never traced (a span per probe would drown the webhooks' traces)."""


class TracingUnavailable(ConfigError):  # noqa: N818 - a configuration error
    """The ``OTEL_*`` variables ask for traces but the ``otel`` extra is not installed, or name an unknown exporter."""


class _Headers(Protocol):
    """What :func:`record_span` reads of a consumed record (an aiokafka ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class _State:
    """The process's tracing switch: off (``provider`` None) or the SDK provider every span goes to."""

    provider: TracerProvider | None = None
    tracer: Tracer | None = None
    configured_from_env = False


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()

_LOG_FIELDS = {
    "tenant": "ledgerflow.tenant",
    "source": "ledgerflow.source",
    "connection": "ledgerflow.connection",
    "event_id": "cloudevents.event_id",
}
"""Log context fields (:func:`ledgerflow.core.logs.log_context`) copied onto a record's span → attribute names."""


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard variables ask for traces (see the module docstring).

    ``OTEL_SDK_DISABLED=true`` always wins; ``OTEL_TRACES_EXPORTER=none`` alone asks for nothing.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracing_enabled() -> bool:
    """Whether spans are being recorded in this process."""
    return _State.provider is not None


def enable_tracing(provider: TracerProvider) -> None:
    """Record every span of this process with ``provider`` (:func:`configure_tracing`'s, or a test's own).

    Brokers, HTTP clients and ASGI apps built *after* this call are instrumented. A provider
    built here should start with :func:`text_keys_processor` (Kafka keys as text).
    """
    _State.provider = provider
    _State.tracer = provider.get_tracer("ledgerflow")


def disable_tracing() -> None:
    """Stop recording (components already instrumented keep their no-op-cheap instrumentation)."""
    _State.provider = None
    _State.tracer = None


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on from the standard ``OTEL_*`` variables when they ask for it; return whether it is on.

    Once per process (later calls return the first answer). The resource is ``service.name`` =
    ``OTEL_SERVICE_NAME`` or ``service_name`` (e.g. ``ledgerflow-connector``), plus
    ``OTEL_RESOURCE_ATTRIBUTES``; the sampler is the SDK's (``OTEL_TRACES_SAMPLER``, parent-based
    always-on by default); spans are exported in batches (``OTEL_BSP_*``). The provider also becomes
    OpenTelemetry's global one.

    Raises:
        TracingUnavailable: tracing is asked for but the ``otel`` extra is not installed, or
            ``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` names something unsupported.
    """
    env = os.environ if environ is None else environ
    if _State.configured_from_env or not tracing_requested(env):
        return tracing_enabled()
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as exc:
        raise TracingUnavailable(
            "OTEL_* variables ask for traces but OpenTelemetry is not installed: pip install 'ledgerflow[otel]'"
        ) from exc
    exporter_name = (env.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        exporter = _otlp_exporter(env)
    else:
        raise TracingUnavailable(f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported: use otlp, console or none")
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(text_keys_processor())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    enable_tracing(provider)
    _State.configured_from_env = True
    return True


def text_keys_processor() -> Any:
    """A span processor that turns ``bytes`` attribute values (FastStream's Kafka message keys) into text.

    ledgerflow's keys are UTF-8 record ids; as bytes they reach backends base64-encoded, and the
    console exporter cannot write them at all (it drops the whole batch of spans). Undecodable
    bytes are written as their hex.
    """
    from opentelemetry.sdk.trace import SpanProcessor

    class TextKeys(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for name, value in list((span.attributes or {}).items()):
                if isinstance(value, bytes):
                    try:
                        span.set_attribute(name, value.decode("utf-8"))
                    except UnicodeDecodeError:
                        span.set_attribute(name, value.hex())

    return TextKeys()


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    """The OTLP span exporter of ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (it reads endpoint, headers, TLS itself)."""
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise TracingUnavailable(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use grpc or http/protobuf")


def record_span(stage: str, record: _Headers) -> contextlib.AbstractContextManager[Any]:
    """The span of one consumed record's handling in ``stage`` (``transform``, ``connector``, ``audit``).

    Its parent is the record's ``traceparent`` header (the producer span that wrote it), so the
    record's trace continues across the Kafka hop; it is the current span while the stage handles
    the record (its writes, ERP calls and dead letter are its children). Span kind ``CONSUMER``,
    name ``<stage> <topic>``, messaging attributes (topic, partition, offset) and the record's log
    context (:func:`ledgerflow.core.logs.log_context`: ``ledgerflow.tenant``, ``ledgerflow.source``,
    ``ledgerflow.connection``, ``cloudevents.event_id``). Off: a shared no-op.
    """
    if _State.tracer is None:
        return _NO_SPAN
    return _record_span(_State.tracer, stage, record)


@contextlib.contextmanager
def _record_span(tracer: Tracer, stage: str, record: _Headers) -> Iterator[Any]:
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    carrier = {
        name: value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for name, value in record.headers
        if name in (_TRACE_HEADER, "tracestate", "baggage")
    }
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "ledgerflow.stage": stage,
    }
    for field, value in structlog.contextvars.get_contextvars().items():
        if field in _LOG_FIELDS and isinstance(value, str):
            attributes[_LOG_FIELDS[field]] = value
    with tracer.start_as_current_span(
        f"{stage} {record.topic}", context=extract(carrier), kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def dead_lettered(reason: str, detail: str) -> None:
    """Mark the current record's span as dead-lettered: status error, ``ledgerflow.dlq.reason`` (off: nothing)."""
    if _State.tracer is None:
        return
    from opentelemetry.trace import Status, StatusCode, get_current_span

    span = get_current_span()
    span.set_attribute("ledgerflow.dlq.reason", reason)
    span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {reason}: {detail[:500]}"))


def publish_span(topic: str, headers: dict[str, str]) -> contextlib.AbstractContextManager[Any]:
    """A producer span around one write to ``topic`` whose context replaces ``headers['traceparent']``.

    For writers that talk to aiokafka directly (the ingress); FastStream's middleware does the same
    for the workers' brokers. The consumer of the record continues from this span. Off: a no-op
    that leaves ``headers`` as they are.
    """
    if _State.tracer is None:
        return _NO_SPAN
    return _publish_span(_State.tracer, topic, headers)


@contextlib.contextmanager
def _publish_span(tracer: Tracer, topic: str, headers: dict[str, str]) -> Iterator[Any]:
    from opentelemetry.propagate import inject
    from opentelemetry.trace import SpanKind

    attributes = {"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.destination.name": topic}
    with tracer.start_as_current_span(f"{topic} publish", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        inject(headers)
        yield span


def broker_middlewares() -> tuple[Any, ...]:
    """FastStream's Kafka OpenTelemetry middleware when tracing is on, else nothing."""
    if _State.provider is None:
        return ()
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

    return (KafkaTelemetryMiddleware(tracer_provider=_State.provider),)


def instrument_http_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Trace every request of ``client`` (OpenTelemetry's httpx instrumentation) when tracing is on; return it.

    A client span per request, child of the current span (the booking), with the ``traceparent``
    sent to the server. The workers' client runs httpx over aiohttp's pool
    (:mod:`ledgerflow.core.outbound.transport`); instrumenting at the httpx level gives one span per call
    whichever transport is underneath.
    """
    if _State.provider is None:
        return client
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_State.provider)
    return client


def instrument_asgi(app: Any) -> Any:
    """``app`` wrapped in OpenTelemetry's ASGI middleware when tracing is on (else ``app`` itself).

    A server span per request that continues the caller's ``traceparent``; ``/healthz``,
    ``/readyz`` and ``/metrics`` are not traced. The span is named after the app's route template
    (``POST /webhooks/{tenant}/mercoa``, ``http.route``), as FastAPI's instrumentation does, never
    after the path (tenant names, record ids, or whatever an unknown client sends): just the
    method when no route matches.
    """
    if _State.provider is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app,
        excluded_urls=",".join(_NOT_TRACED),
        default_span_details=_route_span_details(getattr(app, "routes", ())),
        tracer_provider=_State.provider,
        exclude_spans=["receive", "send"],
    )


def _route_span_details(routes: Sequence[Any]) -> Any:
    """ASGI span details from the first route of ``routes`` (Starlette) that fully matches the request."""
    from starlette.routing import Match

    def details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
        method = str(scope.get("method") or "HTTP")
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL and isinstance(getattr(route, "path", None), str):
                return f"{method} {route.path}", {"http.route": route.path}
        return method, {}

    return details
