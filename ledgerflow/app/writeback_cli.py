"""``ledgerflow source-writer``: write records read from the ERPs into the tenants' sources.

Registered on the main CLI by :func:`register` (kept out of ``cli.py`` so the command's options
and wiring live in one place). The worker is :func:`ledgerflow.transformers.writeback.main.run_source_writer`;
what it writes where: ``docs/writeback.md``.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register", "source_writer"]


def source_writer(
    concurrency: Annotated[int, typer.Option(min=1, help="Records of different keys written at once.")] = 8,
) -> None:
    """Run the source writers (consumer group ledgerflow.writeback): ERP records into the tenants' sources.

    ERP vendors, GL accounts, tracking and projects into INGENIOUS with custom_id = the ERP id, and
    ERP payments onto INGENIOUS invoices, Mercoa invoices and Monite payables (tenants' `writeback`).

    Exit 2 on a configuration problem (a writer enabled without its source's credentials).
    """
    from ledgerflow.app import cli
    from ledgerflow.core.settings import ConfigError, Settings
    from ledgerflow.transformers.writeback.main import run_source_writer
    from ledgerflow.transformers.writeback.runtime import check_writeback

    settings = Settings()
    cli._setup_logging(settings)
    routing = cli._load(settings)
    try:
        check_writeback(routing)
    except ConfigError as exc:
        cli.console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    bootstrap = cli._require_bootstrap(settings)
    cli._preflight(settings, kafka=bootstrap, state=True)
    cli._serve_until_signal(
        run_source_writer(
            settings,
            routing,
            bootstrap,
            embedded=False,
            concurrency=concurrency,
            health_port=settings.metrics_port,
            health_host=settings.metrics_host,
        ),
        settings,
        lambda running: f"source writers for {sum(1 for w in running.runtime.writers.values() if w)} tenant(s)",
    )


def register(app: typer.Typer) -> None:
    """Add ``source-writer`` to ``app``."""
    app.command("source-writer")(source_writer)
