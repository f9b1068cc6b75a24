"""CONTRIBUTING.md's "Add an ERP" recipe, followed mechanically: a tiny ERP package and one registry line.

The package is written to a temporary folder with the files the recipe names (``__init__.py``,
``connector.py``, ``mapping.py``, ``config.py``, ``errors.py``, ``sandbox.py``), registered with
one :class:`~ledgerflow.connectors.registry.ErpEntry` line, and then used the way ledgerflow uses
every ERP: ``ledgerflow config check`` accepts a routing file naming it (and names a mistyped
option), ``ledgerflow demo --all-erps`` would include it, and the connector runtime books a bill
through it into its sandbox. If the recipe stops being true, this test fails.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from typer.testing import CliRunner

from ledgerflow.app.cli import app
from ledgerflow.app.demo import all_erps_routing
from ledgerflow.connectors import registry
from ledgerflow.connectors.registry import ErpEntry, check_routing, connector_class, sandbox_module
from ledgerflow.connectors.runtime import ConnectorRuntime
from ledgerflow.contracts import Outcome
from ledgerflow.contracts.events import EventAttributes
from ledgerflow.core.asgi import serve
from ledgerflow.core.settings import ConfigError, Routing, Settings
from ledgerflow.core.state import StateStore
from tests.connectors.contract import contract_bill

PACKAGE = {
    "__init__.py": '''
        """TinyLedger: the smallest ERP, for the "Add an ERP" recipe."""

        from tinyledger.connector import TinyLedgerConnector

        __all__ = ["TinyLedgerConnector"]
    ''',
    "config.py": '''
        """TinyLedger options and credentials."""

        from pydantic import Field, SecretStr

        from ledgerflow.connectors.config import ConnectionCredentials, ConnectionOptions


        class Options(ConnectionOptions):
            """TinyLedger options."""

            ledger: str = Field("main", description="Ledger the bills are posted to.")


        class Credentials(ConnectionCredentials):
            """TinyLedger credentials."""

            api_key: SecretStr | None = Field(None, description="API key sent as a bearer token.")
    ''',
    "mapping.py": '''
        """Canonical bill → TinyLedger bill body (pure)."""

        from typing import Any

        from ledgerflow.contracts import Bill


        def bill_body(bill: Bill, ledger: str) -> dict[str, Any]:
            """The body of POST /bills: number, ledger and the total as an exact decimal string."""
            return {"number": bill.bill_number, "ledger": ledger, "total": str(bill.total), "currency": bill.currency}
    ''',
    "errors.py": '''
        """How TinyLedger errors are classified."""

        from ledgerflow.core.outbound.client import DEFAULT_ERRORS, ErrorRule, ErrorTable
        from ledgerflow.contracts.errors import ErrorCode

        TINY_ERRORS = DEFAULT_ERRORS.merged(ErrorTable({409: ErrorRule(False, ErrorCode.ERP_DUPLICATE)}))
    ''',
    "connector.py": '''
        """TinyLedger connector: bills only."""

        from typing import ClassVar

        from ledgerflow.connectors.base import Booked, Connector, HandleContext, PermanentError, Unsupported
        from ledgerflow.core.outbound.client import ErpClient
        from ledgerflow.contracts import Bill, CanonicalRecord, Operation
        from ledgerflow.contracts.errors import ErrorCode
        from tinyledger.config import Credentials, Options
        from tinyledger.errors import TINY_ERRORS
        from tinyledger.mapping import bill_body


        class TinyLedgerConnector(Connector):
            """Books bills with POST /bills."""

            erp: ClassVar[str] = "tinyledger"
            options_model = Options
            credentials_model = Credentials
            supports: ClassVar[frozenset[str]] = frozenset({"bill"})

            def __init__(self, name, config, http, state):  # type: ignore[no-untyped-def]
                super().__init__(name, config, http, state)
                self.options = Options.model_validate(config.options)
                self.client = ErpClient.for_connection(
                    http, erp=self.erp, connection=name, config=config, base_url=self.api_root("TinyLedger", __name__),
                    default_rate_per_minute=600, default_concurrency=4, errors=TINY_ERRORS,
                )

            async def check(self) -> None:
                await self.client.request("GET", "/bills", operation="bill.list")

            async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
                if not isinstance(record, Bill):
                    raise Unsupported(ErrorCode.ERP_UNSUPPORTED_OBJECT, f"TinyLedger books no {record.object_type}")
                response = await self.client.request(
                    "POST", "/bills", operation="bill.create", json_body=bill_body(record, self.options.ledger),
                    headers={"Idempotency-Key": ctx.idempotency_key},
                )
                bill_id = response.json().get("id")
                if not bill_id:
                    raise PermanentError(ErrorCode.ERP_PROTOCOL, "TinyLedger answered without an id")
                return Booked(Operation.CREATE, str(bill_id), None, response.status_code)
    ''',
    "sandbox.py": '''
        """TinyLedger sandbox: POST/GET /bills, idempotent by Idempotency-Key."""

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from ledgerflow.connectors.sandbox_kit import point_at
        from ledgerflow.core.settings import ConnectionConfig


        def create_app() -> Starlette:
            bills: dict[str, dict] = {}

            async def post(request: Request) -> JSONResponse:
                key = request.headers.get("idempotency-key", "")
                if key not in bills:
                    bills[key] = {"id": f"TB-{len(bills) + 1}", **(await request.json())}
                return JSONResponse(bills[key], status_code=201)

            async def get(_: Request) -> JSONResponse:
                return JSONResponse({"bills": list(bills.values())})

            return Starlette(routes=[Route("/bills", post, methods=["POST"]), Route("/bills", get, methods=["GET"])])


        def sandbox_connection(config: ConnectionConfig, base_url: str) -> ConnectionConfig:
            return point_at(config, base_url, {"api_key": "sandbox"})
    ''',
}


@pytest.fixture
def tinyledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The recipe: the ERP's own folder, plus one registry line."""
    package = tmp_path / "tinyledger"
    package.mkdir()
    for name, source in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.ERPS, "tinyledger", ErpEntry("tinyledger:TinyLedgerConnector"))
    yield "tinyledger"
    for module in [m for m in sys.modules if m == "tinyledger" or m.startswith("tinyledger.")]:
        del sys.modules[module]


def _routing_file(tmp_path: Path, options: dict[str, object]) -> Path:
    path = tmp_path / "routing.yaml"
    routing = {
        "tenants": {"acme": {"sources": {"mercoa": {"tokens": ["t"]}}, "connections": ["tiny-main"]}},
        "connections": {
            "tiny-main": {
                "erp": "tinyledger",
                "base_url": "https://tiny.example",
                "objects": ["bill"],
                "options": options,
            }
        },
    }
    path.write_text(yaml.safe_dump(routing), encoding="utf-8")
    return path


def test_the_cli_and_the_config_check_accept_the_new_erp(tinyledger: str, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", "--json", "--routing", str(_routing_file(tmp_path, {"ledger": "ap"}))])
    assert ok.exit_code == 0, ok.output
    report = orjson.loads(ok.output)
    assert report["plan"]["services"]["connectors"]["tiny-main"]["erp"] == "tinyledger"

    typo = runner.invoke(app, ["config", "check", "--json", "--routing", str(_routing_file(tmp_path, {"ledgr": "ap"}))])
    assert typo.exit_code == 2
    assert any("options.ledgr: Extra inputs are not permitted" in p for p in orjson.loads(typo.output)["problems"])

    assert "tinyledger" in all_erps_routing().connections
    with pytest.raises(ConfigError, match="ledgr"):
        check_routing(Routing.model_validate(yaml.safe_load(_routing_file(tmp_path, {"ledgr": "ap"}).read_text())))


async def test_the_runtime_books_through_the_new_erp_into_its_sandbox(tinyledger: str, tmp_path: Path) -> None:
    sandbox = sandbox_module(tinyledger)
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await state.create_all()
    try:
        async with serve(sandbox.create_app()) as url, httpx.AsyncClient() as http:
            routing = Routing.model_validate(yaml.safe_load(_routing_file(tmp_path, {"ledger": "ap"}).read_text()))
            config = sandbox.sandbox_connection(routing.connections["tiny-main"], url)
            routing = routing.model_copy(update={"connections": {"tiny-main": config}})
            connector = connector_class(tinyledger)("tiny-main", config, http, state)
            await connector.check()

            async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
                raise AssertionError("book() publishes nothing")

            runtime = ConnectorRuntime(connector, state, routing, publish, Settings())
            bill = contract_bill("tiny-1").model_copy(update={"tenant": "acme"})
            attrs = EventAttributes(
                id="evt-tiny-1", source="/tenants/acme/mercoa", type="io.ledgerflow.bill.v1", tenant="acme"
            )
            result = await runtime.book(bill, attrs)
            assert result.outcome is Outcome.SUCCEEDED, result.error
            assert result.erp == "tinyledger"
            assert result.erp_record_id == "TB-1"
            stored = (await http.get(f"{url}/bills")).json()["bills"]
            assert stored == [
                {"id": "TB-1", "number": bill.bill_number, "ledger": "ap", "total": str(bill.total), "currency": "USD"}
            ]
            again = await runtime.book(bill, attrs)
            assert again.outcome is Outcome.DUPLICATE
    finally:
        await state.close()
