"""``ledgerflow demo --writeback``: the loop of issue 19 against the stack, step by step.

1. a vendor and two GL accounts are created in the QuickBooks sandbox (as an accountant would);
2. the reference sync is asked for a pass now (``POST /v1/connections/quickbooks/reference-sync``,
   the audit API's on-demand trigger) and finishes with what it read;
3. the source writer wrote them into the INGENIOUS sandbox: an Accounting Company and Accounting
   Entities whose ``custom_id`` is the QuickBooks ``Id`` (looked up by ``custom_id``);
4. an INGENIOUS vendor-invoice webhook carrying those custom ids (``accounting_company_custom_id``,
   ``accounting_entity_custom_id``, INGENIOUS's Custom Accounting Integration, seed 000) is posted;
5. it is booked in QuickBooks as a Bill whose ``VendorRef`` and every line's ``AccountRef`` are
   those ids (read back from the ERP);
6. the bill is paid in QuickBooks (a ``BillPayment`` linked to it);
7. another pass reads the payment (applied to the bill, the binder naming the INGENIOUS invoice)
   and the source writer records it on the INGENIOUS invoice, now ``paid``.

Each step is a :class:`DemoStep`; the first one that fails ends the run (:class:`WritebackDemoError`).
The routing is :func:`writeback_routing`: tenant ``demo`` with an INGENIOUS source and
``writeback.ingenious`` (vendors → companies, GL accounts → entities; payments), one QuickBooks
connection; the stack starts the INGENIOUS sandbox (:mod:`ledgerflow.app.source_sandboxes`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import orjson
from rich.console import Console

from ledgerflow.app.demo import collect_results
from ledgerflow.app.stack import RunningStack
from ledgerflow.connectors.quickbooks import QuickBooksConnector
from ledgerflow.contracts import Outcome, canonical_id
from ledgerflow.core.kafka import kafka_client_options
from ledgerflow.core.settings import Routing, Settings

__all__ = [
    "CONNECTION",
    "INGENIOUS_SECRET",
    "DemoStep",
    "WritebackDemoError",
    "print_step",
    "run_cli",
    "run_writeback_demo",
    "writeback_routing",
]

CONNECTION = "quickbooks"
"""The demo's ERP connection."""

INGENIOUS_SECRET = "Bearer demo-ingenious-token"  # noqa: S105 - the demo tenant's webhook header value
"""The ``Authorization`` header value INGENIOUS sends to tenant ``demo``'s webhook URLs."""

T = TypeVar("T")

QBO = {"minorversion": "75"}
BANK_ACCOUNT = "35"
"""The QuickBooks sandbox's seeded checking account (``Account`` 35, Bank) the bill is paid from."""


def writeback_routing() -> Routing:
    """Tenant ``demo``: INGENIOUS webhooks into one QuickBooks connection, QuickBooks reference data written back.

    ``writeback.ingenious.objects`` takes vendors (Accounting Companies) and GL accounts
    (Accounting Entities) only, so the first pass over the seeded company file stays within
    INGENIOUS's 30 writes a minute; payments are recorded on the INGENIOUS invoices they pay.
    """
    return Routing.model_validate(
        {
            "tenants": {
                "demo": {
                    "sources": {"ingenious": {"tokens": [INGENIOUS_SECRET]}},
                    "connections": [CONNECTION],
                    "writeback": {"ingenious": {"objects": {"vendor": "company", "gl_account": "entity"}}},
                }
            },
            # Dedicated: the demo drives QuickBooks through the connection's own connector
            # (``RunningStack.connectors``), which a fleet builds only on its first record.
            "connections": {
                CONNECTION: {"erp": "quickbooks", "objects": ["bill", "vendor"], "options": {"dedicated": True}}
            },
        }
    )


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One step of the demo: what was done, what it showed, and the ids it produced."""

    number: int
    title: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


class WritebackDemoError(RuntimeError):
    """A step did not show what it should (the message says which and what was seen)."""


def print_step(console: Console, step: DemoStep) -> None:
    """Print ``step`` as one numbered line and its detail."""
    console.print(f"[bold green]{step.number}.[/bold green] [bold]{step.title}[/bold]", highlight=False)
    console.print(f"   {step.detail}", highlight=False, soft_wrap=True)


async def _until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float) -> T:  # noqa: ASYNC109
    """``probe()`` until it returns something, at most ``timeout`` s; :class:`WritebackDemoError` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise WritebackDemoError(f"{what}: nothing after {timeout:g}s")
        await asyncio.sleep(0.2)


async def _qbo(connector: QuickBooksConnector, method: str, path: str, operation: str, body: Any = None) -> Any:
    response = await connector.client().request(method, path, operation=operation, params=QBO, json_body=body)
    return response.json()


async def _sync_now(stack: RunningStack, audit: httpx.AsyncClient, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    """Request a reference sync pass of the demo connection through the audit API and wait for its end."""
    url = f"/v1/connections/{CONNECTION}/reference-sync"
    accepted = await audit.post(url)
    if accepted.status_code != 202:
        raise WritebackDemoError(f"reference sync request answered {accepted.status_code}: {accepted.text}")
    status_url = accepted.json()["status_url"]

    async def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = (await audit.get(status_url)).json()
        return run if run.get("status") in ("succeeded", "failed") else None

    run = await _until("the reference sync pass", finished, timeout)
    if run["status"] != "succeeded":
        raise WritebackDemoError(f"the reference sync pass failed: {run['error']}")
    return run


async def run_writeback_demo(
    stack: RunningStack,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109
    on_step: Callable[[DemoStep], None] | None = None,
) -> list[DemoStep]:
    """Run the seven steps against ``stack`` (started with :func:`writeback_routing`); return them.

    Raises:
        WritebackDemoError: a step did not show what it should (the steps before it were reported).
        RuntimeError: the stack has no INGENIOUS sandbox, no QuickBooks connection or no audit key.
    """
    ingenious = stack.source_sandboxes.ingenious
    connector = stack.connectors.get(CONNECTION)
    if ingenious is None or not isinstance(connector, QuickBooksConnector) or stack.audit_admin_key is None:
        raise RuntimeError("run the stack with writeback_routing(): an INGENIOUS sandbox and a QuickBooks connection")
    steps: list[DemoStep] = []

    def report(title: str, detail: str, **data: Any) -> None:
        step = DemoStep(len(steps) + 1, title, detail, data)
        steps.append(step)
        if on_step is not None:
            on_step(step)

    suffix = uuid.uuid4().hex[:6]
    ing_headers = {"authorization": f"Bearer {ingenious.token}"}
    async with (
        httpx.AsyncClient(base_url=stack.source_sandboxes.urls["ingenious"], headers=ing_headers, timeout=10) as ing,
        httpx.AsyncClient(
            base_url=stack.audit_url, headers={"authorization": f"Bearer {stack.audit_admin_key}"}, timeout=10
        ) as audit,
    ):
        # 1. The accountant creates a vendor and two GL accounts in QuickBooks.
        vendor = (
            await _qbo(connector, "POST", "/vendor", "vendor.create", {"DisplayName": f"Harbour Ready-Mix {suffix}"})
        )["Vendor"]
        accounts = []
        for number, name in (("6110", "Concrete"), ("6120", "Formwork")):
            body = {"Name": f"{name} {suffix}", "AcctNum": f"{number}{suffix[:2]}", "AccountType": "Expense"}
            accounts.append((await _qbo(connector, "POST", "/account", "account.create", body))["Account"])
        report(
            "Vendor and GL accounts created in QuickBooks",
            f"Vendor {vendor['Id']} {vendor['DisplayName']!r}; "
            + "; ".join(f"Account {a['Id']} {a['AcctNum']} {a['Name']!r}" for a in accounts),
            vendor_id=vendor["Id"],
            account_ids=[a["Id"] for a in accounts],
        )

        # 2. The reference sync, on demand through the audit API.
        run = await _sync_now(stack, audit, timeout)
        counts = ", ".join(f"{kind} {n}" for kind, n in run["counts"].items() if n) or "nothing new"
        report(
            "Reference sync of QuickBooks",
            f"POST /v1/connections/{CONNECTION}/reference-sync → run {run['id']} {run['status']}: {counts}",
            run=run,
        )

        # 3. The source writer put them into INGENIOUS with custom_id = the QuickBooks Id.
        async def written(kind: str, custom_id: str) -> dict[str, Any] | None:
            rows = (await ing.get(f"/accounting-{kind}", params={"custom_id": custom_id})).json()["data"]
            return next((r for r in rows if r.get("custom_id") == custom_id), None)

        async def company() -> dict[str, Any] | None:
            return await written("companies", vendor["Id"])

        found_company = await _until("the vendor in INGENIOUS", company, timeout)
        entities = []
        for account in accounts:

            async def entity(account_id: str = account["Id"]) -> dict[str, Any] | None:
                return await written("entities", account_id)

            entities.append(await _until(f"GL account {account['Id']} in INGENIOUS", entity, timeout))
        report(
            "Arrived in INGENIOUS with the ERP ids as custom_id",
            f"Accounting Company {found_company['id']} custom_id={found_company['custom_id']} "
            f"{found_company['name']!r}; "
            + "; ".join(f"Accounting Entity {e['id']} custom_id={e['custom_id']} {e['name']!r}" for e in entities),
            company=found_company,
            entities=entities,
        )

        # 4. An INGENIOUS vendor invoice carrying those custom ids.
        invoice_id = f"vi_demo_{suffix}"
        lines = [
            ("Ready-mix concrete 4000 PSI", 12, Decimal("118.50")),
            ("Formwork hire, week 47", 1, Decimal("640.00")),
        ]
        total = sum((qty * price for _, qty, price in lines), Decimal(0))
        ingenious.add_invoice(invoice_id, total, "USD")
        payload = {
            "name": "Vendor Invoice",
            "subject": f"HRM-{suffix}",
            "data": {
                "id": invoice_id,
                "vendor_id": f"ven_{suffix}",
                "vendor_name": vendor["DisplayName"],
                "accounting_company_id": found_company["id"],
                "accounting_company_custom_id": vendor["Id"],
                "accounting_entity_id": entities[0]["id"],
                "accounting_entity_custom_id": accounts[0]["Id"],
                "number": f"HRM-{suffix}",
                "date": "2026-11-02",
                "due_date": "2026-12-02",
                "currency": "USD",
                "title": "Level 2 slab pour",
                "total_value": str(total),
                "line_items": [
                    {
                        "id": f"li_{n}",
                        "description": text,
                        "qty": qty,
                        "unit_value": str(price),
                        "gross_value": str(qty * price),
                    }
                    for n, (text, qty, price) in enumerate(lines, 1)
                ],
            },
        }
        async with httpx.AsyncClient(timeout=30) as client:
            posted = await client.post(
                f"{stack.ingress_url}/webhooks/demo/ingenious/vendor_invoice",
                content=orjson.dumps(payload),
                headers={"content-type": "application/json", "authorization": INGENIOUS_SECRET},
            )
        if posted.status_code >= 300:
            raise WritebackDemoError(f"the ingress answered {posted.status_code}: {posted.text}")
        report(
            "INGENIOUS vendor invoice posted",
            f"{invoice_id} ({total} USD) with accounting_company_custom_id={vendor['Id']}, "
            f"accounting_entity_custom_id={accounts[0]['Id']} → {posted.status_code}",
            invoice_id=invoice_id,
            total=str(total),
        )

        # 5. Booked in QuickBooks with those ids.
        cid = canonical_id("demo", "ingenious", "bill", invoice_id)
        results = await collect_results(
            stack.bootstrap_servers,
            stack.settings.topics.results,
            cid,
            [CONNECTION],
            timeout,
            client_options=kafka_client_options(stack.settings),
        )
        result = results.get(CONNECTION)
        if result is None or result.outcome is not Outcome.SUCCEEDED or result.erp_record_id is None:
            raise WritebackDemoError(f"the bill was not booked: {result.error if result else 'no result'}")
        bill = (await _qbo(connector, "GET", f"/bill/{result.erp_record_id}", "bill.read"))["Bill"]
        vendor_ref = bill["VendorRef"]["value"]
        line_accounts = sorted(
            {str(line["AccountBasedExpenseLineDetail"]["AccountRef"]["value"]) for line in bill["Line"]}
        )
        if (
            vendor_ref != vendor["Id"]
            or line_accounts != [accounts[0]["Id"]]
            or Decimal(str(bill["TotalAmt"])) != total
        ):
            raise WritebackDemoError(
                f"Bill {bill['Id']} has VendorRef {vendor_ref}, line accounts {line_accounts}, total {bill['TotalAmt']}"
            )
        report(
            "Booked in QuickBooks with those ids",
            f"Bill {bill['Id']}: VendorRef {vendor_ref}, AccountRef {', '.join(line_accounts)}, "
            f"TotalAmt {bill['TotalAmt']}",
            bill_id=bill["Id"],
        )

        # 6. The bill is paid in QuickBooks.
        payment_body = {
            "VendorRef": {"value": vendor["Id"]},
            "PayType": "Check",
            "CheckPayment": {"BankAccountRef": {"value": BANK_ACCOUNT}},
            "TotalAmt": total,
            "Line": [{"Amount": total, "LinkedTxn": [{"TxnId": bill["Id"], "TxnType": "Bill"}]}],
        }
        paid = (await _qbo(connector, "POST", "/billpayment", "billpayment.create", payment_body))["BillPayment"]
        report(
            "Bill paid in QuickBooks",
            f"BillPayment {paid['Id']} of {paid['TotalAmt']} linked to Bill {bill['Id']}",
            payment_id=paid["Id"],
        )

        # 7. Synced back: the payment lands on the INGENIOUS invoice.
        run = await _sync_now(stack, audit, timeout)

        async def settled() -> dict[str, Any] | None:
            doc: dict[str, Any] = (await ing.get(f"/invoices/{invoice_id}")).json()["data"]
            return doc if doc["status"] == "paid" else None

        doc = await _until(f"INGENIOUS invoice {invoice_id} paid", settled, timeout)
        recorded = ", ".join(f"{p['custom_id']} {p['amount']} {p.get('currency', '')}".strip() for p in doc["payments"])
        report(
            "Payment synced back: INGENIOUS invoice paid",
            f"run {run['id']} read payment {run['counts'].get('payment', 0)}; invoice {invoice_id} status "
            f"{doc['status']}, payments: {recorded}",
            invoice=doc,
        )
    return steps


def run_cli(settings: Settings, console: Console, timeout: float = 30.0) -> int:
    """``ledgerflow demo --writeback``: start the stack with :func:`writeback_routing`, print each step; the exit code.

    0 when all seven steps showed what they should, 1 otherwise (the failing step is printed).
    """
    from ledgerflow.app.stack import run_stack
    from ledgerflow.core import aio

    async def run() -> int:
        async with run_stack(settings, writeback_routing()) as stack:
            console.print(
                f"[bold]ledgerflow demo --writeback[/bold]: QuickBooks sandbox {stack.sandboxes.get('quickbooks')}, "
                f"INGENIOUS sandbox {stack.source_sandboxes.urls.get('ingenious')}",
                highlight=False,
            )
            try:
                await run_writeback_demo(stack, timeout=timeout, on_step=lambda step: print_step(console, step))
            except WritebackDemoError as exc:
                console.print(f"[bold red]✗[/bold red] {exc}", highlight=False)
                return 1
        console.print("[bold green]the loop is closed[/bold green]: ERP reference data in, ERP payment back")
        return 0

    return aio.run(run(), settings.event_loop)
