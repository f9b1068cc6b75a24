"""``ledgerflow sync-reference``: read reference data from ERP connections onto the inbound topics.

Registered on the main CLI by :func:`register` (kept out of ``cli.py`` so the command's options
and wiring live in one place). See :mod:`ledgerflow.connectors.reference` for cursors and topics
and :mod:`ledgerflow.connectors.reference_main` for the service (schedule, on-demand requests).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgerflow.core import aio
from ledgerflow.core.settings import ConfigError, Routing, Settings

__all__ = ["register", "sync_reference"]

console = Console()


def _routing(settings: Settings, decrypt: list[str] | None) -> Routing:
    from ledgerflow.connectors.registry import check_routing
    from ledgerflow.core.connections import stored_routing

    try:
        # The routing file (or demo routing) with the state store's enabled connections merged in;
        # only the credentials of the connections read here are decrypted (like the connector worker's).
        routing = aio.run(stored_routing(settings, settings.load_routing(), decrypt=decrypt), settings.event_loop)
        check_routing(routing)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    return routing


def _connections(routing: Routing, connection: str | None, every: bool) -> list[str]:
    """The connections named by ``--connection`` / ``--all``; exit 2 on a problem."""
    from ledgerflow.connectors.reference import READERS
    from ledgerflow.connectors.reference_main import reference_connections

    if every:
        try:
            names = reference_connections(routing)
        except ValueError as exc:
            console.print(f"[red]configuration error:[/red] {exc}")
            raise typer.Exit(2) from None
        if not names:
            console.print(f"[red]no connection has a reference reader[/red] (readers exist for {', '.join(READERS)})")
            raise typer.Exit(2)
        return names
    assert connection is not None
    config = routing.connections.get(connection)
    if config is None:
        console.print(f"[red]no connection named {connection!r} in the routing file or the state store[/red]")
        raise typer.Exit(2)
    if config.erp not in READERS:
        console.print(f"[red]connection {connection!r}: no reference reader for ERP {config.erp!r}[/red]")
        raise typer.Exit(2)
    return [connection]


def _request_now(settings: Settings, connections: list[str], timeout: float) -> int:
    """Ask the running service for a pass of each connection, wait for them, print the runs; the exit code."""
    from ledgerflow.core.reference_runs import ReferenceRun, ReferenceRuns
    from ledgerflow.core.state import StateStore

    async def run() -> list[ReferenceRun | None]:
        state = StateStore.from_settings(settings)
        try:
            runs = ReferenceRuns(state.engine)
            ids = [await runs.request(name, trigger="cli", requested_by="cli") for name in connections]
            console.print(f"requested a reference sync of {', '.join(connections)}; waiting up to {timeout:g}s…")
            deadline = time.monotonic() + timeout
            latest: list[ReferenceRun | None] = [None] * len(ids)
            while True:
                latest = [await runs.get(i) for i in ids]
                if all(r is not None and r.finished for r in latest) or time.monotonic() >= deadline:
                    return latest
                await asyncio.sleep(0.5)
        finally:
            await state.close()

    found = aio.run(run(), settings.event_loop)
    table = Table(title="reference sync on demand")
    for col in ("connection", "request", "status", "records", "error"):
        table.add_column(col)
    code = 0
    for name, found_run in zip(connections, found, strict=True):
        if found_run is None or not found_run.finished:
            status = found_run.status if found_run else "missing"
            hint = "no sync-reference service picked it up" if status == "pending" else "still running"
            table.add_row(name, found_run.id if found_run else "-", f"[yellow]{status}[/yellow]", "-", hint)
            code = 1
            continue
        counts = ", ".join(f"{k} {v}" for k, v in found_run.counts.items()) or "0"
        colour = "green" if found_run.status == "succeeded" else "red"
        table.add_row(name, found_run.id, f"[{colour}]{found_run.status}[/{colour}]", counts, found_run.error or "")
        if found_run.status != "succeeded":
            code = 1
    console.print(table)
    return code


def sync_reference(
    connection: Annotated[
        str | None,
        typer.Option(
            help="ERP connection name from the routing file (an ERP with a reader: quickbooks, xero, netsuite, "
            "sap or coupa)."
        ),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every connection with a reader (options.reference_sync.enabled not false).")
    ] = False,
    once: Annotated[bool, typer.Option("--once", help="Read every kind once and exit.")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Ask the running sync-reference service for a pass now and wait for it.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            min=1, help="Seconds between passes (default: each connection's reference_sync.interval_seconds, 900)."
        ),
    ] = None,
    page_size: Annotated[int, typer.Option(min=1, max=1000, help="Records per ERP read.")] = 100,
    timeout: Annotated[float, typer.Option(min=1, help="--now: seconds to wait for the passes.")] = 120.0,
) -> None:
    """Read vendors, customers, GL accounts, tax rates, tracking dimensions, projects and payments from ERP connections.

    Readers exist for quickbooks (QuickBooks Online), xero, netsuite, sap (S/4HANA) and coupa
    connections; what each reads is in docs and ``connectors/<erp>/reader.py``.

    Each kind resumes from its cursor in the state store; new or changed records go to
    ``<prefix>.inbound.<kind>.v1`` with ``ce_direction: inbound``. With ``--once`` one pass is made
    and the counts printed; with ``--now`` the running service (same state store) is asked for a
    pass and its outcome printed; otherwise the service runs (a pass per connection at start and
    every interval, jittered; on-demand requests every 2 s; /healthz /readyz /metrics on
    ``LEDGERFLOW_METRICS_PORT``) until SIGINT/SIGTERM. Exit 2 on a configuration problem, 1 when a
    ``--once`` or ``--now`` pass fails.
    """
    from ledgerflow.connectors.reference import open_reference_sync
    from ledgerflow.connectors.reference_main import run_reference_sync

    if every == (connection is not None):
        console.print("[red]name one --connection, or --all[/red]")
        raise typer.Exit(2)
    if once and now:
        console.print("[red]--once reads here; --now asks the running service: choose one[/red]")
        raise typer.Exit(2)
    settings = Settings()
    if now:  # no credentials needed: the service reads
        names = _connections(_routing(settings, decrypt=[]), connection, every)
        code = _request_now(settings, names, timeout)
        if code:
            raise typer.Exit(code)
        return
    routing = _routing(settings, decrypt=None if every else [connection or ""])
    names = _connections(routing, connection, every)
    unmounted = [n for n in names if not routing.connections[n].credentials_mounted]
    if unmounted:
        console.print(
            f"[red]credentials not mounted for {', '.join(unmounted)}[/red] (mount each connection's Secret at its "
            "credentials_dir, or set options.reference_sync.enabled: false; docs/deploy.md)"
        )
        raise typer.Exit(2)
    if not settings.kafka_bootstrap_servers:
        console.print("[red]LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS is not set[/red]")
        raise typer.Exit(2)
    bootstrap = settings.kafka_bootstrap_servers

    async def run_once() -> int:
        code = 0
        for name in names:
            async with open_reference_sync(
                settings, routing, name, bootstrap, embedded=False, page_size=page_size
            ) as sync:
                try:
                    report = await sync.sync_once()
                except Exception as exc:  # the connector's error names what failed
                    console.print(f"[red]reference sync of {name} failed:[/red] {exc}")
                    code = 1
                    continue
                for kind, count in report.published.items():
                    console.print(f"{name} {kind}: {count}" if every else f"{kind}: {count}")
                console.print(f"{report.total} record(s) published in {report.reads} read(s)")
        return code

    async def serve() -> int:
        async with run_reference_sync(
            settings,
            routing,
            names,
            bootstrap,
            embedded=False,
            page_size=page_size,
            interval=interval,
            health_port=settings.metrics_port,
            health_host=settings.metrics_host,
        ) as running:
            console.print(f"reference sync of {', '.join(running.connections)}; health on {running.health_url}")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0

    code = aio.run(run_once() if once else serve(), settings.event_loop)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``sync-reference`` to ``app``."""
    app.command("sync-reference")(sync_reference)
