"""The ingress HTTP application: ``/webhooks/{tenant}/{source}[/{object}]``, health, readiness, metrics.

Order of checks for a webhook (the first failure answers; nothing reaches Kafka):
405 method → 404 tenant/source/object → 413 size → 415 content type → 401 credentials (on the
raw bytes) → 400 JSON / envelope → publish (503 + ``Retry-After`` when the broker cannot take it)
→ the source's success status (200 where its vendor documents 200: Mercoa, Monite; else 202)
with ``{"event_id": …}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ledgerflow.contracts.events import deterministic_id, raw_event_attributes, record_version_id
from ledgerflow.core import metrics
from ledgerflow.core.problems import Problem, problem_doc, problem_response
from ledgerflow.core.settings import ConfigError, Routing, Settings, SourceConfig
from ledgerflow.ingress.publisher import BrokerUnavailable, Publisher, RecordTooLarge
from ledgerflow.ingress.sources import SOURCES
from ledgerflow.ingress.sources.base import BadEnvelope, Envelope, SourceSpec, Unauthorized, WebhookRequest

__all__ = ["create_app"]

log = logging.getLogger(__name__)
webhook_log = logging.getLogger("ledgerflow.ingress.webhooks")
"""One line per refused webhook with its reason (senders' troubleshooting starts from these logs)."""

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else the reason it is not."""

_JSON_TYPES = ("application/json", "application/cloudevents+json", "text/json")


_ACCEPTED_DOC: dict[str, Any] = {
    "description": "Accepted: the broker acknowledged the write.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["event_id"],
                "properties": {"event_id": {"type": "string"}},
            }
        }
    },
}

_ERROR_DOCS: dict[str, Any] = {
    "400": problem_doc("Not JSON, or not the source's envelope."),
    "401": problem_doc("Credentials missing or wrong, or signed timestamp outside the tolerance."),
    "404": problem_doc("Unknown tenant, source or object route."),
    "405": problem_doc("Method not used by this source."),
    "413": problem_doc("Body larger than the configured limit."),
    "415": problem_doc("Content type is not JSON."),
    "503": problem_doc("The broker cannot take the event now; retry after Retry-After seconds."),
}


def _webhook_openapi(spec: SourceSpec) -> dict[str, Any]:
    """OpenAPI fragment of one source's webhook operation: body, credential headers, answers."""

    def param(name: str, where: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": where, "required": False, "description": description, "schema": {"type": "string"}}

    params = [
        param(h, "header", f"{spec.name} credential (checked on the raw body bytes).") for h in spec.credential_headers
    ]
    params += [
        param(h, "header", f"Sent by {spec.name}; part of the signed content or kept as an event attribute.")
        for h in spec.extra_headers
    ]
    params += [
        param(q, "query", f"{spec.name} per-tenant token, when the sender cannot set a header.")
        for q in spec.credential_query
    ]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
            "description": "The webhook body exactly as the source sends it; it is published untouched.",
        },
        "parameters": params,
        "responses": {str(spec.success_status): _ACCEPTED_DOC, **_ERROR_DOCS},
    }


RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of a 503: long enough for a broker leader election, short for the sender's retry budget."""

_STATUS_SLUGS = {404: "not-found", 405: "method-not-allowed", 400: "bad-request"}


class Ingress:
    """The webhook handler, bound to settings, routing and a publisher."""

    def __init__(self, settings: Settings, routing: Routing, publisher: Publisher) -> None:
        self.settings = settings
        self.routing = routing
        self.publisher = publisher
        self.topics = settings.topics
        self.max_body = settings.ingress_max_body_bytes

    def _resolve(self, tenant: str, source: str, obj: str | None, method: str) -> tuple[SourceSpec, SourceConfig]:
        spec = SOURCES.get(source)
        if spec is None:
            raise Problem(404, "unknown-source", "Unknown source", f"no source named {source!r}", outcome="not_found")
        if method not in spec.methods:
            allowed = ", ".join(sorted(spec.methods))
            raise Problem(
                405,
                "method-not-allowed",
                "Method not allowed",
                f"{source} webhooks use {allowed}, not {method}",
                outcome="method_not_allowed",
                headers={"Allow": allowed},
            )
        tenant_cfg = self.routing.tenants.get(tenant)
        if tenant_cfg is None:
            raise Problem(404, "unknown-tenant", "Unknown tenant", f"no tenant named {tenant!r}", outcome="not_found")
        source_cfg = tenant_cfg.sources.get(source)
        if source_cfg is None:
            raise Problem(
                404,
                "unknown-source",
                "Source not configured",
                f"tenant {tenant!r} has no {source} source",
                outcome="not_found",
            )
        if spec.objects is None and obj is not None:
            raise Problem(
                404, "unknown-object", "Unknown object route", f"{source} takes no object segment", outcome="not_found"
            )
        if spec.objects is not None and obj not in spec.objects:
            known = ", ".join(sorted(spec.objects))
            raise Problem(
                404,
                "unknown-object",
                "Unknown object route",
                f"{source} object must be one of: {known}",
                outcome="not_found",
            )
        return spec, source_cfg

    def _too_large(self) -> Problem:
        return Problem(
            413,
            "too-large",
            "Payload too large",
            f"webhook bodies are limited to {self.max_body} bytes",
            outcome="too_large",
        )

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: Request, tenant: str, source: str, obj: str | None) -> Response:
        """Verify, publish and answer one webhook (see the module docstring for the order of checks)."""
        started = time.perf_counter()
        metrics.WEBHOOKS_IN_FLIGHT.inc()
        outcome = "accepted"
        # Labels only from what is configured: a path segment nobody configured is "unknown", so
        # random paths cannot grow the number of series.
        spec_for_label = SOURCES.get(source)
        label_source = source if spec_for_label is not None else "unknown"
        label_tenant = tenant if tenant in self.routing.tenants else "unknown"
        if obj is None:
            label_object = "-"
        elif spec_for_label is not None and spec_for_label.objects is not None and obj in spec_for_label.objects:
            label_object = obj
        else:
            label_object = "unknown"
        try:
            spec, cfg = self._resolve(tenant, source, obj, request.method)
            body = await self._read_body(request)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype not in _JSON_TYPES:
                raise Problem(
                    415,
                    "unsupported-media-type",
                    "Unsupported media type",
                    f"expected application/json, got {ctype or 'no content type'}",
                    outcome="unsupported_media_type",
                )
            wreq = WebhookRequest(
                method=request.method,
                headers=request.headers,  # case-insensitive, keys lower case
                query=request.query_params,
                body=body,
                object=obj,
                received_at=time.time(),
            )
            try:
                spec.verify(wreq, cfg)
            except ConfigError as exc:  # the tenant's secret file cannot be read: our fault, not the sender's
                log.error("cannot check %s/%s credentials: %s", tenant, source, exc)
                raise Problem(
                    503,
                    "credentials-unavailable",
                    "Service unavailable",
                    "the ingress cannot read this source's secrets now; the event was not stored, retry later",
                    outcome="unavailable",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from None
            except Unauthorized as exc:
                raise Problem(401, "unauthorized", "Unauthorized", str(exc), outcome="unauthorized") from None
            except BadEnvelope as exc:  # authenticated, but a delivery this source's spec refuses (version…)
                raise Problem(400, "bad-envelope", "Not a webhook envelope", str(exc), outcome="bad_request") from None
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise Problem(
                    400, "malformed-json", "Malformed JSON", f"body is not valid JSON: {exc}", outcome="bad_request"
                ) from None
            try:
                envelope = spec.describe_with(payload, wreq, cfg)
            except BadEnvelope as exc:
                raise Problem(400, "bad-envelope", "Not a webhook envelope", str(exc), outcome="bad_request") from None
            event_id = await self._publish(tenant, spec, envelope, wreq)
            metrics.WEBHOOK_BYTES.labels(source).inc(len(body))
            return JSONResponse({"event_id": event_id}, status_code=spec.success_status)
        except Problem as problem:
            outcome = problem.outcome
            webhook_log.warning(
                "webhook rejected: %d %s",
                problem.status,
                problem.detail,
                extra={
                    "tenant": tenant[:100],
                    "source": source[:100],
                    "object": obj,
                    "status": problem.status,
                    "problem": problem.slug,
                    "reason": problem.detail,
                },
            )
            return problem_response(problem, instance=request.url.path)
        except Exception:
            # Never counted as accepted: the event was not stored (or its 202 was not sent).
            outcome = "error"
            log.exception("webhook %s/%s failed unexpectedly", label_tenant, label_source)
            failure = Problem(500, "internal-error", "Internal error", "the event was not stored", outcome="error")
            return problem_response(failure, instance=request.url.path)
        finally:
            metrics.WEBHOOKS_IN_FLIGHT.dec()
            metrics.WEBHOOK_DURATION.labels(label_source).observe(time.perf_counter() - started)
            metrics.WEBHOOKS_RECEIVED.labels(label_tenant, label_source, label_object, outcome).inc()

    async def _publish(self, tenant: str, spec: SourceSpec, envelope: Envelope, wreq: WebhookRequest) -> str:
        if envelope.delivery_id:
            event_id = envelope.delivery_id
        elif envelope.version:
            event_id = record_version_id(tenant, spec.name, wreq.object or "", envelope.record_id, envelope.version)
        else:
            event_id = deterministic_id(tenant, spec.name, wreq.object or "", wreq.body)
        extensions = {**spec.extensions(wreq), "sourceevent": envelope.event_type, "method": wreq.method}
        if wreq.object:
            extensions["object"] = wreq.object
        attrs = raw_event_attributes(
            id=event_id,
            tenant=tenant,
            source=spec.name,
            event_type=envelope.event_type,
            record_id=envelope.record_id,
            extensions=extensions,
            traceparent=wreq.headers.get("traceparent"),  # the sender's trace continues (W3C Trace Context)
        )
        try:
            await self.publisher.publish(
                self.topics.raw(spec.name), envelope.record_id.encode(), wreq.body, attrs.to_headers()
            )
        except RecordTooLarge as exc:
            raise Problem(
                413, "too-large", "Payload too large", f"the event was not stored: {exc}", outcome="too_large"
            ) from None
        except BrokerUnavailable as exc:
            detail = (
                f"{exc}: the event (id {event_id}) may still be stored; retry with the same body, it keeps "
                "its event id and is booked once"
                if exc.maybe_stored
                else f"the event was not stored, retry later: {exc}"
            )
            raise Problem(
                503,
                "broker-unavailable",
                "Service unavailable",
                detail,
                outcome="unavailable",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        return event_id


class IngressApp(FastAPI):
    """The ingress FastAPI app with a fast lane for webhooks.

    ``/webhooks/{tenant}/{source}[/{object}]`` requests, whatever the method, go straight to
    :meth:`Ingress.handle` of :attr:`webhook_ingress`, skipping FastAPI's middleware stack and
    dependency solving (about a third of the CPU of a webhook request, measured with py-spy
    under ``python -m bench.ingress``). Every other path (health, readiness, metrics, OpenAPI,
    unknown paths) goes through FastAPI.
    """

    webhook_ingress: Ingress | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection (see the class docstring)."""
        ingress = self.webhook_ingress
        if ingress is not None and scope["type"] == "http":
            parts = scope["path"].split("/")  # "", "webhooks", tenant, source[, object]
            if len(parts) in (4, 5) and parts[1] == "webhooks" and parts[-1]:
                request = Request(scope, receive)
                obj = parts[4] if len(parts) == 5 else None
                response = await ingress.handle(request, parts[2], parts[3], obj)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _add_source_routes(app: FastAPI, ingress: Ingress, spec: SourceSpec) -> None:
    """Register (and document) ``/webhooks/{tenant}/<source>[/{object}]`` for each method ``spec`` uses."""
    extra = _webhook_openapi(spec)
    name = spec.name
    for method in sorted(spec.methods):
        if spec.objects is None:

            async def plain(request: Request, tenant: str) -> Response:
                return await ingress.handle(request, tenant, name, None)

            app.add_api_route(
                f"/webhooks/{{tenant}}/{name}",
                plain,
                methods=[method],
                openapi_extra=extra,
                response_class=Response,
                operation_id=f"{name}_{method.lower()}",
                summary=f"Receive a {name} webhook",
                tags=["webhooks"],
            )
        else:
            objects = sorted(spec.objects)

            async def per_object(
                request: Request,
                tenant: str,
                object: str = Path(description="Object type of this URL.", json_schema_extra={"enum": objects}),
            ) -> Response:
                return await ingress.handle(request, tenant, name, object)

            app.add_api_route(
                f"/webhooks/{{tenant}}/{name}/{{object}}",
                per_object,
                methods=[method],
                openapi_extra=extra,
                response_class=Response,
                operation_id=f"{name}_{method.lower()}",
                summary=f"Receive a {name} webhook for one object type",
                tags=["webhooks"],
            )


def create_app(
    settings: Settings,
    routing: Routing,
    publisher: Publisher,
    readiness: ReadinessCheck | None = None,
    health: Callable[[], Mapping[str, Any]] | None = None,
) -> IngressApp:
    """Build the ingress ASGI app.

    Args:
        settings: process settings (body limit, topic prefix).
        routing: tenants and their source credentials.
        publisher: where accepted webhooks go (Kafka in production).
        readiness: async check for ``/readyz`` (broker reachable, topics present); None = always ready.
        health: extra facts for ``/healthz`` (``ledgerflow up``: the embedded broker's restarts).
    """
    ingress = Ingress(settings, routing, publisher)
    app = IngressApp(
        title="ledgerflow ingress",
        version="1",
        description="Receives accounting webhooks, verifies them on the raw bytes and publishes them to Kafka.",
    )

    for spec in SOURCES.values():
        _add_source_routes(app, ingress, spec)

    # Every webhook is served by the fast lane of IngressApp, which also answers unknown
    # sources/objects and methods a source does not use (404/405 problem+json). The per-source
    # APIRoutes above are never reached: they are what the OpenAPI document describes.
    app.router.redirect_slashes = False  # senders do not follow redirects: a wrong URL is a 404
    app.webhook_ingress = ingress

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> Response:
        problem = Problem(
            exc.status_code,
            _STATUS_SLUGS.get(exc.status_code, "http-error"),
            str(exc.detail) if exc.detail else "HTTP error",
            f"{request.method} {request.url.path}: {exc.detail}",
            outcome="not_found",
            headers=dict(exc.headers or {}),
        )
        return problem_response(problem, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> Response:
        problem = Problem(400, "bad-request", "Bad request", "the request is malformed", outcome="bad_request")
        return problem_response(problem, instance=request.url.path)

    @app.get("/healthz", summary="Process is alive (and what happened to the embedded broker)")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", **(health() if health is not None else {})}

    @app.get("/readyz", summary="Broker reachable and topics present")
    async def readyz() -> Response:
        reason = await readiness() if readiness else None
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
