"""Read-back verification: a booked document whose ERP record differs from the source is `failed` (erp.mismatch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ledgerflow.connectors.base import Booked, Connector, HandleContext
from ledgerflow.connectors.retry import RetryPolicy
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.connectors.verify import MISMATCH, StoredDocument, StoredLine, compare, verification_enabled
from ledgerflow.contracts import Bill, CanonicalRecord, Operation, Outcome
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core import metrics
from ledgerflow.core.settings import Routing, Settings
from ledgerflow.core.state import StateStore


def _bill(total: str = "110.00") -> Bill:
    return Bill.model_validate(
        {
            "canonical_id": "t:mercoa:bill:in_1",
            "tenant": "t",
            "source": "mercoa",
            "source_id": "in_1",
            "source_event": "invoice.created",
            "vendor": {"name": "V"},
            "bill_date": "2024-01-01",
            "due_date": "2024-01-31",
            "currency": "USD",
            "line_items": [{"line_number": 1, "amount": "60.00"}, {"line_number": 2, "amount": "40.00"}],
            "subtotal": "100.00",
            "tax_total": "10.00",
            "total": total,
        }
    )


def _stored(**changes: object) -> StoredDocument:
    fields: dict[str, object] = {
        "total": Decimal("110.00"),
        "currency": "USD",
        "tax_total": Decimal("10"),
        "txn_date": date(2024, 1, 1),
        "due_date": date(2024, 1, 31),
        "counterparty_id": "56",
        "lines": (StoredLine(Decimal("60")), StoredLine(Decimal("40.00"))),
    }
    fields.update(changes)
    return StoredDocument(**fields)  # type: ignore[arg-type]


def test_a_faithful_record_has_no_differences() -> None:
    assert compare(_bill(), _stored(), counterparty_id="56") == []


@pytest.mark.parametrize(
    ("changes", "field", "expected", "actual"),
    [
        ({"total": Decimal("109.99")}, "total", "110.00", "109.99"),
        ({"tax_total": Decimal("0")}, "tax_total", "10.00", "0.00"),
        ({"currency": "EUR"}, "currency", "USD", "EUR"),
        ({"txn_date": date(2024, 2, 1)}, "date", "2024-01-01", "2024-02-01"),
        ({"due_date": date(2024, 1, 1)}, "due_date", "2024-01-31", "2024-01-01"),
        ({"counterparty_id": "57"}, "counterparty", "56", "57"),
        ({"lines": (StoredLine(Decimal("100")),)}, "line_count", "2", "1"),
        ({"lines": (StoredLine(Decimal("60")), StoredLine(Decimal("39.99")))}, "line[2].amount", "40.00", "39.99"),
    ],
)
def test_each_kind_of_difference_is_named_with_both_values(
    changes: dict[str, object], field: str, expected: str, actual: str
) -> None:
    differences = compare(_bill(), _stored(**changes), counterparty_id="56")
    assert next((d.field, d.expected, d.actual) for d in differences) == (field, expected, actual)


def test_what_the_erp_does_not_return_is_not_compared() -> None:
    assert compare(_bill(), StoredDocument(total=Decimal("110")), counterparty_id="56") == []


def test_the_option_turns_verification_off() -> None:
    assert verification_enabled({}) is True
    assert verification_enabled({"verify_read_back": False}) is False
    assert verification_enabled({"verify_read_back": "off"}) is False


class AlteringConnector(Connector):
    """Books every bill; the ERP's answer says it stored ``stored_total``."""

    erp = "altering"
    supports = frozenset({"bill"})

    def __init__(self, name: str, routing: Routing, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, routing.connections[name], http, state)
        self.stored_total = Decimal("110.00")
        self.read_backs = 0

    async def check(self) -> None:
        return None

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        op = Operation.UPDATE if ctx.existing else Operation.CREATE
        return Booked(op, "E1", "0", 200)

    async def read_back(self, record: CanonicalRecord, booked: Booked) -> StoredDocument | None:
        self.read_backs += 1
        return StoredDocument(total=self.stored_total, currency="USD")


def _runtime(store: StateStore, options: dict[str, object] | None = None) -> ConnectorRuntime:
    routing = Routing.model_validate(
        {
            "tenants": {"t": {"connections": ["erp"]}},
            "connections": {"erp": {"erp": "http", "objects": ["bill"], "options": options or {}}},
        }
    )
    connector = AlteringConnector("erp", routing, httpx.AsyncClient(), store)
    return ConnectorRuntime(connector, store, routing, _noop, Settings(), RetryPolicy(wait_initial=0))


async def _noop(*_: object) -> None:
    return None


def _attrs(event_id: str) -> EventAttributes:
    return EventAttributes(id=event_id, source="/tenants/t/mercoa", type="io.ledgerflow.bill.v1", tenant="t")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = StateStore(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await s.create_all()
    yield s
    await s.close()


def _count(result: str) -> float:
    return float(metrics.READ_BACK.labels("t", "bill", "altering", "erp", result)._value.get())


async def test_a_mismatch_fails_the_result_and_the_same_content_is_written_again(store: StateStore) -> None:
    rt = _runtime(store)
    connector = rt.connector
    assert isinstance(connector, AlteringConnector)
    before = _count("mismatched")
    connector.stored_total = Decimal("109.99")
    failed = await rt.book(_bill(), _attrs("e1"))
    assert failed.outcome is Outcome.FAILED
    assert failed.error is not None
    assert failed.error.code == MISMATCH
    assert not failed.error.retriable
    assert failed.error.differences is not None
    assert [(d.field, d.expected, d.actual) for d in failed.error.differences] == [("total", "110.00", "109.99")]
    assert "total: source 110.00, altering 109.99" in failed.error.message
    assert failed.erp_record_id == "E1"
    assert _count("mismatched") == before + 1
    # The same content again is not a `duplicate`: it updates the ERP record, and is verified again.
    connector.stored_total = Decimal("110.00")
    fixed = await rt.book(_bill(), _attrs("e2"))
    assert (fixed.outcome, fixed.operation) == (Outcome.SUCCEEDED, Operation.UPDATE)
    assert (await rt.book(_bill(), _attrs("e3"))).outcome is Outcome.DUPLICATE


async def test_verification_can_be_turned_off_per_connection(store: StateStore) -> None:
    rt = _runtime(store, {"verify_read_back": False})
    connector = rt.connector
    assert isinstance(connector, AlteringConnector)
    connector.stored_total = Decimal("1")
    assert (await rt.book(_bill(), _attrs("e1"))).outcome is Outcome.SUCCEEDED
    assert connector.read_backs == 0


def test_payments_are_verified_on_amount_currency_date_and_counterparty() -> None:
    from ledgerflow.connectors.quickbooks.mapping import stored_payment
    from ledgerflow.connectors.xero.mapping import stored_payments
    from ledgerflow.contracts import Payment

    payment = Payment.model_validate(
        {
            "canonical_id": "mercoa:payment:p1",
            "tenant": "t",
            "source": "mercoa",
            "source_id": "p1",
            "source_event": "transaction.completed",
            "direction": "outgoing",
            "party": {"name": "V"},
            "payment_date": "2024-02-01",
            "currency": "USD",
            "amount": "150.00",
            "status": "completed",
        }
    )
    qbo = stored_payment(
        {
            "TotalAmt": Decimal("150"),
            "CurrencyRef": {"value": "USD"},
            "TxnDate": "2024-02-01",
            "VendorRef": {"value": "56"},
        }
    )
    assert compare(payment, qbo, counterparty_id="56") == []
    short = stored_payment({"TotalAmt": Decimal("140"), "TxnDate": "2024-02-02", "VendorRef": {"value": "57"}})
    assert [(d.field, d.expected, d.actual) for d in compare(payment, short, counterparty_id="56")] == [
        ("amount", "150.00", "140.00"),
        ("date", "2024-02-01", "2024-02-02"),
        ("counterparty", "56", "57"),
    ]
    xero = stored_payments(
        [
            {"Amount": Decimal("100"), "Date": "/Date(1706745600000+0000)/", "Invoice": {"CurrencyCode": "USD"}},
            {"Amount": Decimal("50"), "Date": "2024-02-01T00:00:00", "Invoice": {"CurrencyCode": "USD"}},
        ]
    )
    assert (xero.total, xero.txn_date, xero.currency) == (Decimal(150), date(2024, 2, 1), "USD")
    assert compare(payment, xero) == []
