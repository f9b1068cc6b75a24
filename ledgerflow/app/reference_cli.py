"""``ledgerflow sync-reference``: read reference data from one ERP connection onto the inbound topics.

Registered on the main CLI by :func:`register` (kept out of ``cli.py`` so the command's options
and wiring live in one place). See :mod:`ledgerflow.connectors.reference` for cursors and topics.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console

from ledgerflow.core import aio
from ledgerflow.core.settings import ConfigError, Settings

__all__ = ["register", "sync_reference"]

console = Console()


def sync_reference(
    connection: Annotated[
        str, typer.Option(help="ERP connection name from the routing file (quickbooks, xero, netsuite, sap or coupa).")
    ],
    once: Annotated[bool, typer.Option("--once", help="Read every kind once and exit.")] = False,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between passes when not --once.")] = 900.0,
    page_size: Annotated[int, typer.Option(min=1, max=1000, help="Records per ERP read.")] = 100,
) -> None:
    """Read vendors, customers, GL accounts, tax rates, tracking dimensions and projects from an ERP connection.

    Readers exist for QuickBooks Online, Xero, NetSuite, SAP S/4HANA and Coupa connections.

    Each kind resumes from its cursor in the state store; new or changed records go to
    ``<prefix>.inbound.<kind>.v1`` with ``ce_direction: inbound``. With ``--once`` one pass is made
    and the counts printed; otherwise a pass runs every ``--interval`` seconds until SIGINT/SIGTERM.
    Exit 2 on a configuration problem, 1 when a ``--once`` pass fails.
    """
    from ledgerflow.connectors.reference import READERS, open_reference_sync
    from ledgerflow.connectors.registry import check_routing
    from ledgerflow.core.connections import stored_routing

    settings = Settings()
    try:
        # The routing file (or demo routing) with the state store's enabled connections merged in;
        # only this connection's stored credentials are decrypted (like the connector worker's).
        routing = aio.run(stored_routing(settings, settings.load_routing(), decrypt=[connection]), settings.event_loop)
        check_routing(routing)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    config = routing.connections.get(connection)
    if config is None:
        console.print(f"[red]no connection named {connection!r} in the routing file[/red]")
        raise typer.Exit(2)
    if config.erp not in READERS:
        console.print(f"[red]connection {connection!r}: no reference reader for ERP {config.erp!r}[/red]")
        raise typer.Exit(2)
    if not settings.kafka_bootstrap_servers:
        console.print("[red]LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS is not set[/red]")
        raise typer.Exit(2)
    bootstrap = settings.kafka_bootstrap_servers

    async def run() -> int:
        async with open_reference_sync(
            settings, routing, connection, bootstrap, embedded=False, page_size=page_size
        ) as sync:
            if once:
                try:
                    report = await sync.sync_once()
                except Exception as exc:  # the connector's error names what failed
                    console.print(f"[red]reference sync of {connection} failed:[/red] {exc}")
                    return 1
                for kind, count in report.published.items():
                    console.print(f"{kind}: {count}")
                console.print(f"{report.total} record(s) published in {report.reads} read(s)")
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await sync.run(interval, stop)
            return 0

    code = aio.run(run(), settings.event_loop)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``sync-reference`` to ``app``."""
    app.command("sync-reference")(sync_reference)
