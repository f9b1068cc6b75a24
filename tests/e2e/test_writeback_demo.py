"""``ledgerflow demo --writeback`` end to end against the stack (issue 19, "done when").

A vendor and GL accounts created in the QuickBooks sandbox arrive in the INGENIOUS sandbox with
custom_id = their QuickBooks Id after an on-demand reference sync; an INGENIOUS vendor invoice
carrying those custom ids is booked in QuickBooks with them; the bill paid in QuickBooks is
synced back and the INGENIOUS invoice is paid. Every step is asserted on what the sandboxes hold,
not on the demo's own report only.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ledgerflow.app.stack import run_stack
from ledgerflow.app.writeback_demo import DemoStep, run_writeback_demo, writeback_routing
from ledgerflow.core.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def test_the_writeback_demo_runs_every_step(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"wbdemo{unique}",
        topic_partitions=1,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    seen: list[DemoStep] = []
    async with run_stack(settings, writeback_routing()) as stack:
        assert stack.source_writer
        assert stack.reference_sync == ["quickbooks"]
        ingenious = stack.source_sandboxes.ingenious
        assert ingenious is not None
        steps = await run_writeback_demo(stack, timeout=30, on_step=seen.append)

        assert [s.number for s in steps] == [1, 2, 3, 4, 5, 6, 7]
        assert seen == steps
        vendor_id = steps[0].data["vendor_id"]
        account_ids = steps[0].data["account_ids"]
        assert len(account_ids) == 2
        # 2: the on-demand pass read the new vendor and accounts.
        run = steps[1].data["run"]
        assert run["trigger"] == "api"
        assert run["counts"]["vendor"] == 1
        assert run["counts"]["gl_account"] == 2
        # 3: in the INGENIOUS sandbox itself, with custom_id = the QuickBooks Id.
        company = ingenious.find("company", vendor_id)
        assert company is not None
        assert company["name"].startswith("Harbour Ready-Mix")
        for account_id in account_ids:
            assert ingenious.find("entity", account_id) is not None
        # 5: the bill in QuickBooks carries them.
        assert steps[4].data["bill_id"]
        assert f"VendorRef {vendor_id}" in steps[4].detail
        assert f"AccountRef {account_ids[0]}" in steps[4].detail
        # 7: the INGENIOUS invoice is paid by the QuickBooks payment, recorded once.
        invoice = ingenious.invoices[steps[3].data["invoice_id"]]
        assert invoice["status"] == "paid"
        assert len(invoice["payments"]) == 1
        assert invoice["payments"][0]["custom_id"] == steps[5].data["payment_id"]
        assert Decimal(invoice["payments"][0]["amount"]) == Decimal(steps[3].data["total"])
        assert steps[6].data["invoice"]["status"] == "paid"
