"""``ledgerflow reconcile``: the control totals of a tenant, as a table or JSON (:mod:`ledgerflow.audit.reconcile`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime

import typer
from rich.console import Console
from rich.table import Table

from ledgerflow.audit.migrate import upgrade
from ledgerflow.audit.reconcile import Reconciliation, reconcile
from ledgerflow.audit.store import AuditStore
from ledgerflow.core.settings import Routing

__all__ = ["control_totals", "parse_moment", "render", "settled_totals"]


def parse_moment(value: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or date-time (naive = UTC).

    Raises:
        ValueError: not ISO 8601.
    """
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def control_totals(
    state_url: str,
    routing: Routing | None,
    *,
    tenant: str,
    since: datetime,
    until: datetime | None,
    connection: str | None,
) -> Reconciliation:
    """Compute the control totals from the audit store at ``state_url`` (migrated first).

    ``routing`` gives the object types each of the tenant's connections takes, so documents still
    without a result count as pending.
    """
    routes = None
    if routing is not None and tenant in routing.tenants:
        routes = {
            name: list(routing.connections[name].objects)
            for name in routing.tenants[tenant].connections
            if name in routing.connections
        }
    await upgrade(state_url)
    store = AuditStore(state_url)
    try:
        return await reconcile(store, tenant=tenant, since=since, until=until, connection=connection, routes=routes)
    finally:
        await store.close()


async def settled_totals(
    state_url: str,
    *,
    tenant: str,
    since: datetime,
    expected: int,
    timeout: float = 15.0,  # noqa: ASYNC109
) -> Reconciliation:
    """The control totals once the audit recorded ``expected`` results of documents (or after ``timeout`` s).

    For the demo, whose results reach the audit store moments after the ERPs answered.
    """
    store = AuditStore(state_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            result = await reconcile(store, tenant=tenant, since=since)
            recorded = sum(t.booked.count + t.skipped.count + t.failed.count for t in result.totals)
            if recorded >= expected or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.2)
    finally:
        await store.close()


def render(result: Reconciliation, out: Console) -> None:
    """Print the control totals and every document in a difference, with its reason."""
    period = f"{result.since.isoformat()} – {result.until.isoformat() if result.until else 'now'}"
    table = Table(title=f"control totals: tenant {result.tenant}, {period}")
    for column in (
        "connection",
        "object",
        "currency",
        "accepted",
        "booked",
        "skipped",
        "failed",
        "pending",
        "difference",
    ):
        table.add_column(column, justify="right" if column not in ("connection", "object", "currency") else "left")
    for total in result.totals:
        diff = total.difference
        colour = "green" if diff.count == 0 and diff.amount == 0 else "red"
        table.add_row(
            total.connection,
            total.object_type,
            total.currency,
            *(
                f"{bucket.count} / {bucket.amount:f}"
                for bucket in (total.accepted, total.booked, total.skipped, total.failed, total.pending)
            ),
            f"[{colour}]{diff.count} / {diff.amount:f}[/{colour}]",
        )
    out.print(table)
    for total in result.totals:
        for doc in total.unbooked:
            why = f"{doc.code}: {doc.reason}" if doc.code else (doc.reason or "")
            # One line per document, never wrapped (a script may grep it).
            typer.echo(
                f"  {total.connection} {doc.outcome:<8} {doc.canonical_id} {doc.amount:f} {total.currency}  {why}"
            )
    if result.dead_letters:
        stages = ", ".join(f"{stage} {n}" for stage, n in sorted(result.dead_letters.items()))
        out.print(f"dead letters in the period: {stages}")
    out.print("balanced: every accepted document is booked or skipped" if result.balanced else "NOT balanced")
