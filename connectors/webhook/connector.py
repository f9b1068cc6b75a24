"""Generic HTTP connector (erp kind ``http``): POST canonical records, signed with Standard Webhooks.

For any ERP or in-house system reachable over HTTP. Each record is POSTed to
``config.base_url`` (or ``base_url`` + ``options.paths[<object type>]``) as JSON:

* by default the envelope ``{"type": "<object>.<action>", "event_id": …, "data": <canonical JSON>}``
  (the ``type``/``data`` layout the Standard Webhooks specification recommends);
* or, when ``options.body_template`` is set, the JSON that Jinja2 template renders in a
  *sandboxed* environment (:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`), with the
  variables ``record`` (canonical JSON as a dict; money as decimal strings), ``object_type``,
  ``action``, ``event_id``, ``idempotency_key`` and the filter ``tojson``.

Every request carries the Standard Webhooks headers computed by the ``standardwebhooks`` package
from ``credentials.secret`` (``whsec_…`` base64 secret): ``webhook-id`` = the runtime's
idempotency key (stable across redeliveries, so the receiver can drop duplicates),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` of
``id.timestamp.body``).

A 2xx answer is success; where ``options.record_id_pointer`` (an RFC 6901 JSON pointer, e.g.
``/id``) is configured, the ERP record id is read from the response JSON there and *required*: a
2xx whose body is not JSON or has no scalar at the pointer is an
:class:`~ledgerflow.connectors.base.InvalidResponse` (retried a few times, then dead-lettered),
never a ``succeeded``. Without a pointer the record id is the canonical id.

Read-back verification: with ``options.read_back_path`` (e.g. ``/records/{record_id}``, below
``base_url``) the connector reads the booked document back after each write and compares the
canonical document found at the JSON pointer ``options.read_back_pointer`` (default ``/data``:
the envelope it sent) with the source (:mod:`ledgerflow.connectors.verify`); without it the
endpoint's write answer is all there is and the booking is counted as not verifiable.

Other statuses are classified by :data:`ledgerflow.connectors.webhook.errors.WEBHOOK_ERRORS`
(429/408/5xx retriable, other 4xx permanent), overridable by ``options.error_overrides``. Rate
limit defaults: 600 requests per minute, 10 in flight (``options.rate_limit_per_minute`` / ``options.max_concurrency``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from ledgerflow.connectors.base import Booked, Connector, HandleContext, InvalidResponse, PermanentError, Unsupported
from ledgerflow.connectors.references import REFERENCE_KINDS
from ledgerflow.connectors.verify import StoredDocument
from ledgerflow.connectors.webhook.config import Credentials, Options
from ledgerflow.connectors.webhook.errors import WEBHOOK_ERRORS
from ledgerflow.connectors.webhook.mapping import resolve_pointer, stored_canonical
from ledgerflow.contracts import OBJECT_MODELS, Action, CanonicalRecord, Document, Operation
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import ErpClient, dumps_json, loads_json
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = ["WebhookConnector"]

DEFAULT_RATE_PER_MINUTE = 600.0
DEFAULT_CONCURRENCY = 10


class WebhookConnector(Connector):
    """Delivers every canonical object type to an HTTP endpoint with Standard Webhooks signatures.

    It takes every canonical object type the connection lists in ``config.objects``.

    Raises (from :meth:`handle`):
        Unsupported: an object type not in ``config.objects``.
        PermanentError: ``auth.config`` without ``base_url`` or ``credentials.secret``;
            ``http.template`` when the body template fails or does not render JSON; 4xx answers.
        RetriableError: 429 (with ``Retry-After``), 408, 5xx, timeouts, connection failures.

    """

    erp: ClassVar[str] = "http"
    options_model = Options
    credentials_model = Credentials
    supports: ClassVar[frozenset[str]] = frozenset(OBJECT_MODELS)
    mapping_kinds: ClassVar[frozenset[str]] = frozenset(REFERENCE_KINDS)
    """The endpoint receives the canonical record with every mapped reference in it."""
    payment_kinds: ClassVar[frozenset[str]] = frozenset({"payment", "refund", "return"})
    """The in-house ERP receives the canonical payment, whose ``kind`` says what it is."""

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        if not config.base_url:
            raise PermanentError(ErrorCode.AUTH_CONFIG, f"connection {name!r}: the http connector needs base_url")
        secret = config.credentials.get("secret")
        if secret is None:
            raise PermanentError(
                ErrorCode.AUTH_CONFIG, f"connection {name!r}: the http connector needs credentials.secret"
            )
        try:
            self.webhook = Webhook(secret.get_secret_value())
        except (ValueError, EmptyWebhookSecretError) as exc:  # not base64, or empty
            raise PermanentError(
                ErrorCode.AUTH_CONFIG, f"connection {name!r}: credentials.secret is not a valid secret"
            ) from exc
        self.paths: dict[str, str] = dict(config.options.get("paths", {}))
        self.pointer: str | None = config.options.get("record_id_pointer")
        template = config.options.get("body_template")
        self.template: jinja2.Template | None = None
        if template:
            env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
            env.filters["tojson"] = lambda value: dumps_json(value).decode()
            try:
                self.template = env.from_string(str(template))
            except jinja2.TemplateSyntaxError as exc:
                raise PermanentError(ErrorCode.HTTP_TEMPLATE, f"connection {name!r}: body_template: {exc}") from exc
        self.client = ErpClient.for_connection(
            http,
            erp=self.erp,
            connection=name,
            config=config,
            base_url=config.base_url,
            default_rate_per_minute=DEFAULT_RATE_PER_MINUTE,
            default_concurrency=DEFAULT_CONCURRENCY,
            errors=WEBHOOK_ERRORS,
        )

    async def check(self) -> None:
        """Send a signed ``ledgerflow.ping`` event; any 2xx proves the endpoint and the secret.

        Raises:
            ConnectorError: the endpoint refuses the ping or cannot be reached.

        """
        payload = {"type": "ledgerflow.ping", "data": {"connection": self.name}}
        msg_id = f"ping-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        await self._post("", payload, msg_id, "check")

    def body(self, record: CanonicalRecord, ctx: HandleContext) -> Any:
        """The JSON value to send for ``record`` (default envelope or the rendered template).

        Raises:
            PermanentError: ``http.template`` when rendering fails or the output is not JSON.

        """
        data = record.model_dump(mode="json")
        if self.template is None:
            return {"type": f"{record.object_type}.{record.action.value}", "event_id": ctx.event_id, "data": data}
        try:
            rendered = self.template.render(
                record=data,
                object_type=record.object_type,
                action=record.action.value,
                event_id=ctx.event_id,
                idempotency_key=ctx.idempotency_key,
            )
            return loads_json(rendered)
        except (jinja2.TemplateError, ValueError) as exc:
            raise PermanentError(ErrorCode.HTTP_TEMPLATE, f"body_template for {record.canonical_id}: {exc}") from exc

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """POST ``record`` signed with ``webhook-id`` = ``ctx.idempotency_key``.

        Raises:
            PermanentError, RetriableError: see the class docstring.

        """
        if record.object_type not in self.config.objects:
            raise Unsupported(
                ErrorCode.ERP_UNSUPPORTED_OBJECT, f"connection {self.name!r} does not take {record.object_type} records"
            )
        response = await self._post(
            self.paths.get(record.object_type, ""), self.body(record, ctx), ctx.idempotency_key, record.object_type
        )
        if record.action is not Action.UPSERT:
            operation = Operation.VOID
        else:
            operation = Operation.UPDATE if ctx.existing is not None else Operation.CREATE
        return Booked(
            operation=operation, erp_record_id=self._record_id(response, record), http_status=response.status_code
        )

    async def read_back(self, record: CanonicalRecord, booked: Booked) -> StoredDocument | None:
        """Read the booked document at ``options.read_back_path`` and map it (see the module docstring).

        Raises:
            RetriableError, PermanentError: the read failed, or the answer holds no document
                at ``options.read_back_pointer`` (``erp.protocol``).
        """
        template = self.config.options.get("read_back_path")
        if not template or not isinstance(record, Document) or booked.erp_record_id is None:
            return None
        path = str(template).replace("{record_id}", quote(booked.erp_record_id, safe=""))
        response = await self.client.request("GET", path, operation=f"{record.object_type}.read_back")
        pointer = str(self.config.options.get("read_back_pointer", "/data"))
        try:
            found = resolve_pointer(loads_json(response.content), pointer)
        except (ValueError, LookupError) as exc:
            raise PermanentError(ErrorCode.ERP_PROTOCOL, f"read-back of {booked.erp_record_id}: {exc}") from exc
        if not isinstance(found, dict):
            raise PermanentError(
                ErrorCode.ERP_PROTOCOL, f"read-back of {booked.erp_record_id}: no document at {pointer!r}"
            )
        return stored_canonical(found)

    async def _post(self, path: str, payload: Any, msg_id: str, operation: str) -> httpx.Response:
        content = dumps_json(payload)
        timestamp = datetime.now(UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": self.webhook.sign(msg_id, timestamp, content.decode()),
        }
        # The bytes sent are exactly the bytes signed above.
        return await self.client.request("POST", path, operation=f"{operation}.post", content=content, headers=headers)

    def _record_id(self, response: httpx.Response, record: CanonicalRecord) -> str:
        """The ERP's id of ``record`` from the answer (at ``record_id_pointer``), or the canonical id without one.

        Raises:
            InvalidResponse: a pointer is configured and the answer is not JSON or has no id there.
        """
        if self.pointer is None:
            return record.canonical_id
        try:
            value = resolve_pointer(loads_json(response.content), self.pointer)
        except (ValueError, LookupError) as exc:
            raise InvalidResponse(
                f"{response.request.url.path} answered {response.status_code} without a record id at "
                f"{self.pointer!r}: {type(exc).__name__}: {str(exc)[:200]}",
                http_status=response.status_code,
            ) from exc
        if value is None or isinstance(value, dict | list | bool) or str(value) == "":
            raise InvalidResponse(
                f"{response.request.url.path} answered {response.status_code} with {value!r} at {self.pointer!r}, "
                "not a record id",
                http_status=response.status_code,
            )
        return str(value)
