"""Generic HTTP connector: Standard Webhooks signatures verified by the receiver, templates, errors."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ledgerflow.connectors.base import BinderEntry, HandleContext, PermanentError, RetriableError, Unsupported
from ledgerflow.connectors.sandbox_kit import SandboxControl, serve
from ledgerflow.connectors.webhook import WebhookConnector
from ledgerflow.connectors.webhook import sandbox as receiver_module
from ledgerflow.connectors.webhook.mapping import resolve_pointer
from ledgerflow.connectors.webhook.sandbox import create_receiver
from ledgerflow.contracts import OBJECT_MODELS, Bill, LineItem, Operation, Payment, Reference, VendorRef
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore
from tests.connectors import contract
from tests.connectors.contract import CLIENT_TIMEOUT, KNOWN_GL, ConnectorContract, ContractTarget

SECRET = "whsec_" + base64.b64encode(b"ledgerflow-test-secret-0123456789").decode()
OTHER = "whsec_" + base64.b64encode(b"some-other-secret-9876543210abcd").decode()


def make_bill(source_id: str = "inv_1", **overrides: Any) -> Bill:
    values: dict[str, Any] = {
        "canonical_id": f"acme:mercoa:bill:{source_id}",
        "tenant": "acme",
        "source": "mercoa",
        "source_id": source_id,
        "source_event": "invoice.created",
        "vendor": VendorRef(accounting_id="V-1", name="Concrete Co"),
        "bill_number": "VENDOR-INV-1001",
        "bill_date": date(2024, 1, 15),
        "currency": "USD",
        "line_items": [
            LineItem(line_number=1, amount=Decimal("150.10"), gl_account=Reference(accounting_custom_id="6000"))
        ],
        "subtotal": Decimal("150.10"),
        "total": Decimal("150.10"),
    }
    values.update(overrides)
    return Bill(**values)


def ctx(key: str = "idem-1", existing: BinderEntry | None = None) -> HandleContext:
    """The contract suite's context, with this module's default key (its deliveries assert it)."""
    return contract.ctx(key, existing)


@pytest.fixture
async def receiver() -> AsyncIterator[str]:
    async with serve(create_receiver(SECRET)) as base_url:
        yield base_url


def config(base_url: str, secret: str = SECRET, **options: Any) -> ConnectionConfig:
    return ConnectionConfig(
        erp="http", base_url=base_url, objects=list(OBJECT_MODELS), credentials={"secret": secret}, options=options
    )


def test_connector_supports_every_object_type() -> None:
    assert frozenset(OBJECT_MODELS) == WebhookConnector.supports


def test_resolve_pointer_follows_rfc_6901() -> None:
    doc = {"data": [{"id": 7}], "a/b": {"~x": 1}}
    assert resolve_pointer(doc, "/data/0/id") == 7
    assert resolve_pointer(doc, "/a~1b/~0x") == 1
    assert resolve_pointer(doc, "") is doc
    with pytest.raises(LookupError):
        resolve_pointer(doc, "/data/3")
    with pytest.raises(LookupError):
        resolve_pointer(doc, "data")


async def test_signed_delivery_verified_and_deduplicated_by_webhook_id(
    receiver: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = WebhookConnector("hook", config(receiver, record_id_pointer="/id"), http, state)
    await connector.check()
    booked = await connector.handle(make_bill(), ctx())
    assert booked.operation is Operation.CREATE
    assert booked.http_status == 200
    assert booked.erp_record_id is not None
    assert booked.erp_record_id.startswith("rcv-")
    # Redelivery with the same idempotency key: the receiver drops it and answers the same id.
    again = await connector.handle(make_bill(), ctx())
    assert again.erp_record_id == booked.erp_record_id
    deliveries = [r for r in await SandboxControl(http, receiver).records("bill") if r["id"] == booked.erp_record_id]
    assert len(deliveries) == 1
    body = deliveries[0]["record"]["body"]
    assert body["type"] == "bill.upsert"
    assert body["data"]["canonical_id"] == "acme:mercoa:bill:inv_1"
    assert body["data"]["total"] == "150.10"  # money stays a decimal string
    assert deliveries[0]["record"]["webhook_id"] == "idem-1"
    update = await connector.handle(make_bill(memo="m"), ctx("idem-2", BinderEntry(booked.erp_record_id, None, "h")))
    assert update.operation is Operation.UPDATE


async def test_wrong_secret_is_rejected_by_the_receiver_as_permanent(
    receiver: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    connector = WebhookConnector("hook", config(receiver, secret=OTHER), http, state)
    with pytest.raises(PermanentError) as rejected:
        await connector.handle(make_bill(), ctx())
    assert rejected.value.code == "auth.rejected"
    assert rejected.value.http_status == 401


async def test_body_template_shapes_the_request_and_path_per_object(
    receiver: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    template = (
        '{"invoiceNo": {{ record.bill_number | tojson }}, "amount": {{ record.total }},'
        ' "key": {{ idempotency_key | tojson }}, "kind": {{ object_type | tojson }}}'
    )
    connector = WebhookConnector(
        "hook", config(receiver, body_template=template, paths={"bill": "/ap/bills"}), http, state
    )
    booked = await connector.handle(make_bill(), ctx("idem-t"))
    assert booked.erp_record_id == "acme:mercoa:bill:inv_1"  # no pointer configured: the canonical id
    stored = [
        r for r in await SandboxControl(http, receiver).records("delivery") if r["record"]["webhook_id"] == "idem-t"
    ]
    assert stored[0]["record"]["path"] == "/ap/bills"
    assert stored[0]["record"]["body"] == {
        "invoiceNo": "VENDOR-INV-1001",
        "amount": Decimal("150.10"),
        "key": "idem-t",
        "kind": "bill",
    }
    broken = WebhookConnector("hook", config(receiver, body_template="{{ record.nope }}"), http, state)
    with pytest.raises(PermanentError) as failed:
        await broken.handle(make_bill(), ctx())
    assert failed.value.code == "http.template"
    # The sandbox forbids unsafe attribute access in templates.
    unsafe = WebhookConnector("hook", config(receiver, body_template="{{ record.__class__.__mro__ }}"), http, state)
    with pytest.raises(PermanentError):
        await unsafe.handle(make_bill(), ctx())


async def test_statuses_map_to_retriable_and_permanent(
    receiver: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    control = SandboxControl(http, receiver)
    connector = WebhookConnector("hook", config(receiver), http, state)
    await control.inject(status=429, retry_after=3)
    with pytest.raises(RetriableError) as limited:
        await connector.handle(make_bill(), ctx())
    assert limited.value.retry_after == 3
    await control.inject(status=502)
    with pytest.raises(RetriableError):
        await connector.handle(make_bill(), ctx())
    overridden = WebhookConnector("hook", config(receiver, error_overrides={"http.502": "permanent"}), http, state)
    await control.inject(status=502)
    with pytest.raises(PermanentError):
        await overridden.handle(make_bill(), ctx())
    with pytest.raises(PermanentError) as missing:
        WebhookConnector("hook", ConnectionConfig(erp="http", base_url=receiver), http, state)
    assert missing.value.code == "auth.config"


async def test_object_types_outside_the_connection_are_unsupported(
    receiver: str, http: httpx.AsyncClient, state: StateStore
) -> None:
    narrow = config(receiver)
    narrow.objects = ["vendor"]
    with pytest.raises(Unsupported):
        await WebhookConnector("hook", narrow, http, state).handle(make_bill(), ctx())


# --------------------------------------------------------------------------------------------
# The shared contract suite


class TestWebhookContract(ConnectorContract):
    @pytest.fixture
    async def target(self, http: httpx.AsyncClient, state: StateStore) -> AsyncIterator[ContractTarget]:
        async with serve(create_receiver(SECRET, known_gl_accounts=[KNOWN_GL])) as base_url:
            options = {"record_id_pointer": "/id", "timeout_seconds": CLIENT_TIMEOUT}
            good = ConnectionConfig(
                erp="http", base_url=base_url, objects=["bill"], credentials={"secret": SECRET}, options=options
            )
            bad = ConnectionConfig(
                erp="http", base_url=base_url, objects=["bill"], credentials={"secret": OTHER}, options=options
            )
            payment = Payment(
                canonical_id="contract:mercoa:payment:tx_contract",
                tenant="contract",
                source="mercoa",
                source_id="tx_contract",
                source_event="transaction.created",
                direction="outgoing",
                party=Reference(source_id="ent_acme"),
                payment_date=date(2026, 3, 9),
                currency="USD",
                amount=Decimal("100.00"),
            )
            yield ContractTarget(
                connector=WebhookConnector("hook-contract", good, http, state),
                bad_credentials=WebhookConnector("hook-contract-bad", bad, http, state),
                control=SandboxControl(http, base_url),
                bill_kind="bill",
                unsupported=payment,
                canonical_json=True,
            )


async def test_default_receiver_wired_by_sandbox_connection(http: httpx.AsyncClient, state: StateStore) -> None:
    async with serve(receiver_module.create_app()) as base_url:
        config = receiver_module.sandbox_connection(ConnectionConfig(erp="http"), base_url)
        connector = WebhookConnector("hook-default", config, http, state)
        await connector.check()
        booked = await connector.handle(make_bill(), ctx())
        assert booked.erp_record_id is not None
        assert booked.erp_record_id.startswith("rcv-")
