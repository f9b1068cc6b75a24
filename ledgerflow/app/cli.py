"""The ``ledgerflow`` command: ``up``, ``demo``, one command per service, ``sandbox``, ``topics``.

Examples::

    ledgerflow demo                      # everything on this machine, one real webhook, a table
    ledgerflow demo --json               # the SyncResults as a JSON array
    ledgerflow up                        # run until Ctrl-C; prints where to send webhooks
    ledgerflow ingress                   # production: one service per process
    ledgerflow transformer
    ledgerflow connector --connection quickbooks-main
    ledgerflow topics create
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from ledgerflow import __version__
from ledgerflow.app.connections_cli import connections_app
from ledgerflow.app.startup import explain
from ledgerflow.connectors.registry import ERP_KINDS, ERPS, check_routing, mapping_kind_use
from ledgerflow.core import aio
from ledgerflow.core.settings import ConfigError, Routing, Settings

if TYPE_CHECKING:
    from ledgerflow.audit.auth import KeyStore
    from ledgerflow.audit.reconcile import Reconciliation

T = TypeVar("T")
S = TypeVar("S")


class _Group(TyperGroup):
    """Turns a known start-up failure into one line and an exit code (traceback only with ``--debug``)."""

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except Exception as exc:
            failure = None if _DEBUG["on"] else explain(exc)
            if failure is None:
                raise
            console.print(f"[red]error:[/red] {escape(failure.message)}", highlight=False)
            console.print("[dim](ledgerflow --debug … shows the traceback)[/dim]")
            raise typer.Exit(failure.code) from None


_DEBUG = {"on": False}

app = typer.Typer(
    cls=_Group,
    name="ledgerflow",
    help="Move approved accounting records from webhooks into ERPs, over Kafka.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()


def _setup_logging(settings: Settings, quiet: bool = False) -> None:
    from ledgerflow.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, quiet=quiet)
    _setup_tracing()


def _setup_tracing() -> None:
    """Traces from the ``OTEL_*`` variables (off unless they ask); ``service.name`` is ``ledgerflow-<command>``."""
    from ledgerflow.core.tracing import configure_tracing

    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    configure_tracing(f"ledgerflow-{command}" if command.isidentifier() else "ledgerflow")


def _load(settings: Settings, *, credentials_of: Collection[str] | None = ()) -> Routing:
    """The routing file (or the demo routing) with the enabled connections of the state store merged in.

    ``credentials_of``: the stored connections whose credentials this process books with, decrypted
    (None: all of them); the others' credentials stay in the store. On a configuration error: one
    line and exit code 2.
    """
    from ledgerflow.core.connections import stored_routing

    try:
        routing = aio.run(
            stored_routing(settings, settings.load_routing(), decrypt=credentials_of), settings.event_loop
        )
        check_routing(routing)
        return routing
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _check_mappings(routing: Routing) -> None:
    """Load every tenant's mapping file; on a problem print each ``FILE:LINE: message`` and exit 2."""
    from ledgerflow.transformers.declarative import MappingError, tenant_routers

    try:
        tenant_routers(routing)
    except MappingError as exc:
        console.print(f"[red]{len(exc.problems)} problem(s) in mapping files:[/red]")
        for problem in exc.problems:
            console.print(problem, markup=False, highlight=False)
        raise typer.Exit(2) from None


def state_dir(settings: Settings) -> Path:
    """Where ``up`` and ``demo`` keep their state: ``LEDGERFLOW_UP_STATE_DIR``, else the XDG state directory.

    ``$XDG_STATE_HOME/ledgerflow`` (``~/.local/state/ledgerflow`` when unset).
    """
    if settings.up_state_dir is not None:
        return settings.up_state_dir
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ledgerflow"


def _embedded_state(settings: Settings, name: str) -> tuple[Settings, Path | None]:
    """With the embedded broker and the default state URL, keep state in ``<state dir>/<name>.db``.

    The file is made fresh at every start (the embedded broker and the sandboxes start empty: a
    binder from an earlier run would call records "already booked" in sandboxes that forgot them),
    readable by its owner only (it holds OAuth tokens), and stays where the user can see it after
    the run (the path is printed) unless removed with :func:`_remove_state`. Returns the settings to
    use and the file (None when the user configured ``LEDGERFLOW_STATE_URL`` or a broker: their
    state is theirs).
    """
    default = Settings.model_fields["state_url"].default
    if settings.kafka_bootstrap_servers is not None or settings.state_url != default:
        return settings, None
    directory = state_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}.db"
    _remove_state(path)
    path.touch(mode=0o600)
    return settings.model_copy(update={"state_url": f"sqlite+aiosqlite:///{path}"}), path


def _remove_state(path: Path | None) -> None:
    """Delete a state file made by :func:`_embedded_state` (and SQLite's journal files beside it)."""
    if path is None:
        return
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _preflight(settings: Settings, *, kafka: str | None = None, state: bool = False) -> None:
    """Check Kafka security, the state store and the broker before a service starts (one line on failure)."""
    from ledgerflow.app.startup import preflight

    aio.run(preflight(settings, kafka=kafka, state=state), settings.event_loop)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of start-up failures.")] = False,
) -> None:
    """ledgerflow: accounting webhooks → Kafka → canonical records → ERPs."""
    _DEBUG["on"] = debug


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Ingress port.")] = 8080,
    audit_port: Annotated[int, typer.Option(help="Sync-records API port.")] = 8081,
    host: Annotated[str, typer.Option(help="Interface every server listens on (loopback by default).")] = "127.0.0.1",
    clean: Annotated[
        bool, typer.Option("--clean", help="Delete the state file (OAuth tokens, binder, audit) when stopping.")
    ] = False,
) -> None:
    """Run broker, ingress, transformer, every connector, the audit service and the sandboxes until Ctrl-C."""
    settings, state_file = _embedded_state(Settings(), "up")
    _setup_logging(settings)
    routing = _load(settings, credentials_of=None)
    _check_mappings(routing)
    from ledgerflow.app.stack import run_stack

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with run_stack(settings, routing, ingress_port=port, audit_port=audit_port, host=host) as stack:
            out.print(f"[bold green]ledgerflow {__version__} is up[/bold green]")
            if state_file is not None:
                kept = "deleted when stopping (--clean)" if clean else "kept after stopping; --clean deletes it"
                out.print(f"  state       {state_file}  (binder, OAuth tokens, audit; {kept})")
            out.print(f"  broker      {stack.bootstrap_servers}")
            out.print(f"  ingress     {stack.ingress_url}  (/healthz /readyz /metrics /docs)")
            out.print(f"  audit       {stack.audit_url}  (API /v1/sync-records, console {stack.audit_url}/console)")
            for erp, url in stack.sandboxes.items():
                out.print(f"  sandbox     {erp:<11} {url}  (records: {url}/_sandbox/records)")
            for name, config in stack.connections.items():
                out.print(f"  connection  {name:<11} {config.erp} → {config.base_url}")
            for source, tenants in stack.pollers.items():
                polled = ", ".join(tenants) or "no tenant sets options.poll"
                out.print(f"  poller      {source:<11} {polled}")
            if stack.reference_sync:
                out.print(
                    f"  reference   {', '.join(stack.reference_sync)}  (a pass now: POST "
                    f"{stack.audit_url}/v1/connections/<name>/reference-sync)",
                    soft_wrap=True,
                )
            for source, url in stack.source_sandboxes.urls.items():
                out.print(f"  source      {source:<11} {url}  (written back by the source writer)")
            tenant = next(iter(routing.tenants), "demo")
            out.print("\nSend a webhook:")
            out.print(
                f"  curl -i -X POST {stack.ingress_url}/webhooks/{tenant}/mercoa "
                "-H 'content-type: application/json' -H 'authorization: Bearer demo-token' "
                "--data @../shared/samples/mercoa/invoice.created.json"
            )
            if stack.audit_admin_key:
                out.print("\nLocal admin key of the audit API and console (shown once; a new one at each start):")
                out.print(f"  {stack.audit_admin_key}", soft_wrap=True)
                out.print(
                    f"  curl -s -H 'authorization: Bearer {stack.audit_admin_key}' "
                    f"'{stack.audit_url}/v1/sync-records?tenant={tenant}'",
                    soft_wrap=True,
                )
            out.print("\nPress Ctrl-C to stop.")
            await stop.wait()

    try:
        aio.run(run(), settings.event_loop)
    finally:
        if clean:
            _remove_state(state_file)


@app.command()
def demo(
    json_output: Annotated[bool, typer.Option("--json", help="Print the SyncResults as a JSON array.")] = False,
    sample: Annotated[Path | None, typer.Option(help="Mercoa webhook body to post.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the results.")] = 60.0,
    all_erps: Annotated[
        bool, typer.Option("--all-erps", help=f"Book into every ERP kind at once ({', '.join(ERP_KINDS)}).")
    ] = False,
    writeback: Annotated[
        bool,
        typer.Option(
            "--writeback",
            help="The other direction: QuickBooks vendor and GL accounts into INGENIOUS, an INGENIOUS invoice "
            "booked with their ids, its QuickBooks payment synced back.",
        ),
    ] = False,
) -> None:
    """Run everything, post a Mercoa invoice webhook, wait for every ERP's result; exit 0 only if all succeeded."""
    settings, state_file = _embedded_state(Settings(), f"demo-{os.getpid()}")
    _setup_logging(settings, quiet=True)
    if writeback:
        from ledgerflow.app.writeback_demo import run_cli

        try:
            code = run_cli(settings, out, timeout)
        finally:
            _remove_state(state_file)
        raise typer.Exit(code)
    from ledgerflow.app import demo as demo_mod

    routing = demo_mod.all_erps_routing() if all_erps else _load(settings, credentials_of=None)
    from ledgerflow.app.stack import run_stack
    from ledgerflow.contracts import canonical_id as canonical_id_of
    from ledgerflow.core.kafka import kafka_client_options

    body = demo_mod.load_sample(sample)
    payload = orjson.loads(body)
    expected_total = Decimal(str(payload["invoice"]["amount"]))
    tenant = "demo"
    canonical_id = canonical_id_of(tenant, "mercoa", "bill", str(payload["invoice"]["id"]))
    connections = sorted(routing.tenants[tenant].connections) if tenant in routing.tenants else []

    since = datetime.now(UTC) - timedelta(minutes=1)
    control: list[Reconciliation] = []

    async def run() -> list[demo_mod.DemoRow]:
        async with run_stack(settings, routing) as stack:
            if not json_output:
                console.print(f"posting Mercoa {payload['eventType']} ({len(body):,} bytes) to {stack.ingress_url}")
            event_id = await demo_mod.post_webhook(stack, body)
            if not json_output:
                console.print(f"accepted as event {event_id}; waiting for {len(connections)} ERP result(s)…")
            results = await demo_mod.collect_results(
                stack.bootstrap_servers,
                settings.topics.results,
                canonical_id,
                connections,
                timeout,
                client_options=kafka_client_options(settings),
            )
            totals = await demo_mod.sandbox_totals(stack)
            if not json_output:  # what `ledgerflow reconcile` says about this run
                from ledgerflow.app.reconcile import settled_totals

                documents = sum(1 for r in results.values() if r.amount is not None)
                control.append(await settled_totals(settings.state_url, tenant=tenant, since=since, expected=documents))
        rows = []
        for name in connections:
            if name not in results:
                continue
            result = results[name]
            stored = totals.get(result.erp, {}).get(result.erp_record_id or "")
            rows.append(demo_mod.DemoRow(result, stored, expected_total))
        return rows

    try:
        rows = aio.run(run(), settings.event_loop)
    finally:
        _remove_state(state_file)  # a demo leaves nothing behind (its sandboxes' tokens included)
    missing = [c for c in connections if c not in {r.result.connection for r in rows}]
    if json_output:
        sys.stdout.write(orjson.dumps([orjson.loads(r.result.model_dump_json()) for r in rows]).decode() + "\n")
    else:
        table = Table(title="ledgerflow demo: Mercoa invoice → ERPs")
        for col in ("event", "ERP", "connection", "outcome", "ERP record id", "bill total", "stored total"):
            table.add_column(col)
        for row in rows:
            r = row.result
            colour = "green" if row.ok else "red"
            table.add_row(
                r.event_id[:12],
                r.erp,
                r.connection,
                f"[{colour}]{r.outcome.value}[/{colour}]",
                r.erp_record_id or "-",
                f"{r.amount} {r.currency}" if r.amount is not None else "-",
                f"{row.stored_total}" if row.stored_total is not None else "-",
            )
            if r.error:
                table.add_row("", "", "", f"[red]{r.error.code}[/red]", r.error.message, "", "")
        out.print(table)
        if control:
            from ledgerflow.app.reconcile import render

            render(control[0], out)
        for name in missing:
            console.print(f"[red]no result from connection {name} within {timeout:g}s[/red]")
    ok = bool(rows) and not missing and all(r.ok for r in rows)
    raise typer.Exit(0 if ok else 1)


@app.command()
def ingress(
    port: Annotated[int | None, typer.Option(help="Port (default: LEDGERFLOW_INGRESS_PORT).")] = None,
) -> None:
    """Run the ingress service (production: needs LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS)."""
    settings = Settings()
    _setup_logging(settings)
    routing = _load(settings)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=False)
    from ledgerflow.ingress.main import run_ingress

    _serve_until_signal(
        run_ingress(
            settings, routing, bootstrap, embedded=False, host=settings.ingress_host, port=port or settings.ingress_port
        ),
        settings,
        lambda url: f"ingress listening on {url}",
    )


def _require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        console.print(
            "[red]LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS is not set[/red] (use `ledgerflow up` for the embedded stack)"
        )
        raise typer.Exit(2)
    return settings.kafka_bootstrap_servers


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _serve_until_signal(
    service: AbstractAsyncContextManager[S], settings: Settings, announce: Callable[[S], str] | None = None
) -> None:
    """Run ``service`` (a service's ``run_*`` entry) until SIGINT/SIGTERM; print ``announce(running)`` once up."""

    async def run() -> None:
        async with service as running:
            if announce is not None:
                console.print(announce(running), highlight=False)
            await _wait_for_signal()

    aio.run(run(), settings.event_loop)


@app.command()
def transformer(
    concurrency: Annotated[int, typer.Option(help="Records of different keys mapped at once.")] = 16,
) -> None:
    """Run a transformer worker (consumer group ledgerflow.transformer)."""
    settings = Settings()
    _setup_logging(settings)
    routing = _load(settings)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=True)
    _check_mappings(routing)
    from ledgerflow.transformers.main import run_transformer

    _serve_until_signal(
        run_transformer(
            settings,
            routing,
            bootstrap,
            embedded=False,
            concurrency=concurrency,
            health_port=settings.metrics_port,
            health_host=settings.metrics_host,
        ),
        settings,
    )


@app.command()
def poller(
    source: Annotated[str, typer.Option(help="The source whose API feed is polled (accessplanit).")] = "accessplanit",
    since: Annotated[
        str | None, typer.Option(help="Backfill: re-read the feed from this ISO date or timestamp first.")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between rounds (default: LEDGERFLOW_POLLER_INTERVAL_SECONDS).")
    ] = None,
) -> None:
    """Run the poller of a source's API feed: its records go to the raw topic as webhooks would (docs/deploy.md)."""
    settings = Settings()
    _setup_logging(settings)
    routing = _load(settings)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=True)
    from ledgerflow.transformers.poller import normalise_since
    from ledgerflow.transformers.poller_main import POLLED_SOURCES, run_poller

    if source not in POLLED_SOURCES:
        console.print(f"[red]no poller for source {source!r}[/red]: sources with a feed: {', '.join(POLLED_SOURCES)}")
        raise typer.Exit(2)
    try:
        stamp = normalise_since(since) if since else None
    except ValueError:
        console.print(f"[red]--since {since!r} is not an ISO 8601 date or timestamp[/red]")
        raise typer.Exit(2) from None

    _serve_until_signal(
        run_poller(
            settings,
            routing,
            bootstrap,
            embedded=False,
            source=source,
            since=stamp,
            interval=interval or settings.poller_interval_seconds,
            health_port=settings.metrics_port,
            health_host=settings.metrics_host,
        ),
        settings,
        lambda running: f"{source} poller for {len(running.pollers)} tenant(s); health on {running.health_url}",
    )


@app.command()
def connector(
    connection: Annotated[
        str | None, typer.Option(help="One dedicated ERP connection (its own consumer group); or --erp.")
    ] = None,
    erp: Annotated[
        str | None,
        typer.Option(help="Serve every connection of this ERP kind (group ledgerflow.connector.fleet.<erp>)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Records of different keys booked at once (--connection).")] = 8,
    reload_seconds: Annotated[
        float | None,
        typer.Option(
            help="How often --erp re-reads the stored connections (default LEDGERFLOW_CONNECTIONS_RELOAD_SECONDS, 5)."
        ),
    ] = None,
    max_wait: Annotated[
        float, typer.Option(help="Seconds a record may wait for its connection's rate budget before it is parked.")
    ] = 1.0,
) -> None:
    """Run a connector worker: the fleet of one ERP kind (--erp), or one dedicated connection (--connection)."""
    settings = Settings()
    _setup_logging(settings)
    if (connection is None) == (erp is None):
        console.print("[red]give exactly one of --erp KIND (every connection of that kind) or --connection NAME[/red]")
        raise typer.Exit(2)
    if erp is not None:
        reload = reload_seconds or settings.connections_reload_seconds
        _connector_fleet(settings, erp, reload_seconds=reload, max_wait=max_wait)
        return
    assert connection is not None
    routing = _load(settings, credentials_of=[connection])
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=True)
    if connection not in routing.connections:
        console.print(f"[red]no connection named {connection!r} in the routing file or the state store[/red]")
        raise typer.Exit(2)
    config = routing.connections[connection]
    if not config.credentials_mounted:
        console.print(
            f"[red]connection {connection!r}: credentials_dir {config.credentials_dir} is not mounted[/red] "
            "(mount the connection's credentials Secret there; docs/deploy.md)"
        )
        raise typer.Exit(2)
    if config.base_url is None:
        console.print(
            f"[red]connection {connection!r} has no base_url[/red] (sandboxes run only under `ledgerflow up`)"
        )
        raise typer.Exit(2)
    from ledgerflow.connectors.main import run_connector

    _serve_until_signal(
        run_connector(
            settings,
            routing,
            connection,
            bootstrap,
            embedded=False,
            concurrency=concurrency,
            health_port=settings.metrics_port,
            health_host=settings.metrics_host,
        ),
        settings,
    )


def _connector_fleet(settings: Settings, erp: str, *, reload_seconds: float, max_wait: float) -> None:
    """``ledgerflow connector --erp KIND``: every connection of that kind, added and changed at run time."""
    if erp not in ERPS:
        console.print(f"[red]error:[/red] unknown ERP kind {erp!r}: use one of {', '.join(ERPS)}")
        raise typer.Exit(2)
    try:
        # The routing file's own connections; the fleet reads (and re-reads) the stored ones itself
        # and decrypts a stored connection's credentials only when it builds its connector.
        routing = settings.load_routing()
        check_routing(routing)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    unwired = [n for n, c in routing.connections.items() if c.erp == erp and c.base_url is None]
    if unwired:
        console.print(
            f"[red]connection(s) {', '.join(unwired)} have no base_url[/red] (sandboxes run only under `ledgerflow up`)"
        )
        raise typer.Exit(2)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=True)
    from ledgerflow.connectors.fleet import run_fleet

    _serve_until_signal(
        run_fleet(
            settings,
            routing,
            erp,
            bootstrap,
            embedded=False,
            reload_seconds=reload_seconds,
            max_wait=max_wait,
            health_port=settings.metrics_port,
            health_host=settings.metrics_host,
        ),
        settings,
        lambda running: f"{erp} fleet: {len(running.fleet.directory.entries)} connection(s) known",
    )


@app.command()
def sandbox(
    erp: Annotated[str, typer.Argument(help=f"ERP kind: {', '.join(ERP_KINDS)}.")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 0,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default LEDGERFLOW_SANDBOX_HOST, 127.0.0.1).")
    ] = None,
) -> None:
    """Run one ERP sandbox on its real API paths until Ctrl-C."""
    host = host or Settings().sandbox_host
    from ledgerflow.connectors.registry import sandbox_module
    from ledgerflow.core.asgi import serve

    if erp not in ERPS:
        console.print(f"[red]error:[/red] unknown ERP kind {erp!r}: use one of {', '.join(ERPS)}")
        raise typer.Exit(2)

    async def run() -> None:
        async with serve(sandbox_module(erp).create_app(), host=host, port=port) as url:
            out.print(f"{erp} sandbox listening on {url}")
            await _wait_for_signal()

    aio.run(run(), Settings().event_loop)


@app.command()
def topics(
    action: Annotated[
        str, typer.Argument(help="'list' the topics ledgerflow uses or 'create' the missing ones")
    ] = "list",
) -> None:
    """List the topics ledgerflow uses, or create the missing ones on the configured broker."""
    settings = Settings()
    names = settings.topics.all()
    if action == "list":
        for name in names:
            out.print(name)
        return
    if action != "create":
        console.print(f"[red]unknown action {action!r}[/red]: use list or create")
        raise typer.Exit(2)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=False)
    from ledgerflow.core.kafka import ensure_topics, kafka_client_options

    create = ensure_topics(
        bootstrap, names, partitions=settings.topic_partitions, client_options=kafka_client_options(settings)
    )
    created = aio.run(create, settings.event_loop)
    out.print(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else ""))


schema_app = typer.Typer(help="The published contracts: JSON Schemas and the AsyncAPI document.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the files into (created).")],
) -> None:
    """Write a JSON Schema per canonical object and SyncResult, and asyncapi.json (AsyncAPI 3.0)."""
    from ledgerflow.app.schemas import export

    for path in export(directory, Settings()):
        out.print(str(path))


config_app = typer.Typer(help="Check the configuration before deploying it.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    routing: Annotated[
        Path | None, typer.Option(help="Routing file to check (default: LEDGERFLOW_ROUTING_FILE or the demo routing).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the plan and problems as JSON.")] = False,
) -> None:
    """Validate settings, routing and mapping files; print what each service would run (no secrets).

    Exits 0 when the configuration is valid, 2 with one line per problem otherwise.
    """
    from ledgerflow.app.config_check import check_config

    settings = Settings()
    if routing is not None:
        settings = settings.model_copy(update={"routing_file": routing})
    report = check_config(settings)
    if json_output:
        out.print_json(orjson.dumps({"ok": report.ok, "problems": report.problems, "plan": report.plan}).decode())
    else:
        _print_plan(report.plan)
        for problem in report.problems:
            console.print(f"[red]problem:[/red] {escape(problem)}", highlight=False)
        out.print("configuration is valid" if report.ok else f"{len(report.problems)} problem(s)")
    raise typer.Exit(0 if report.ok else 2)


def _print_plan(plan: dict[str, Any]) -> None:
    """The plan of ``config check`` as a rich tree (services, topics, groups, tenants)."""
    from rich.tree import Tree

    tree = Tree(f"ledgerflow ({plan['routing_file']})")
    kafka = plan["kafka"]
    tree.add(
        f"Kafka {kafka['bootstrap_servers']} — {kafka['security_protocol']}, SASL {kafka['sasl_mechanism'] or '–'}"
    )
    tree.add(f"state store {plan['state_url']}; topic prefix {plan['topic_prefix']}")
    tenants = tree.add("tenants")
    for name, tenant in plan["tenants"].items():
        node = tenants.add(f"{name} → {', '.join(tenant['connections']) or 'no connections'}")
        for source, info in tenant["sources"].items():
            node.add(f"{source}: POST {info['route']} ({info['credentials']} credential(s))")
    services = tree.add("services")
    ingress = plan["services"]["ingress"]
    services.add(f"ingress on {ingress['listen']} → {', '.join(ingress['writes'])}")
    for group in plan["services"]["transformer"]["consumer_groups"]:
        services.add(f"transformer: group {group['group']} reads {len(group['topics'])} raw topic(s)")
    for name, conn in plan["services"]["connectors"].items():
        node = services.add(
            f"connector {name} ({conn['erp']}, {conn['base_url']}): {', '.join(conn['objects'])}; "
            f"credentials {', '.join(conn['credential_keys']) or '–'}"
        )
        for group in conn["consumer_groups"]:
            node.add(f"group {group['group']} reads {len(group['topics'])} topic(s)")
    services.add(f"audit on {plan['services']['audit']['listen']}")
    out.print(tree)


keys_app = typer.Typer(
    help="API keys of the audit API and console (stored hashed in LEDGERFLOW_STATE_URL's database; docs/audit.md).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _key_store_run(work: Callable[[KeyStore], Awaitable[T]]) -> T:
    """Run ``work`` on the key store of ``LEDGERFLOW_STATE_URL`` (migrated first)."""
    from ledgerflow.audit.auth import KeyStore
    from ledgerflow.audit.migrate import upgrade
    from ledgerflow.audit.store import AuditStore

    settings = Settings()
    _preflight(settings, state=True)

    async def run() -> T:
        await upgrade(settings.state_url)
        store = AuditStore(settings.state_url)
        try:
            return await work(KeyStore(store.engine))
        finally:
            await store.close()

    return aio.run(run(), settings.event_loop)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for (shown in lists).")],
    scope: Annotated[list[str], typer.Option(help="read, redrive or admin (repeat; each implies the weaker).")],
    tenant: Annotated[list[str], typer.Option(help="A tenant it sees (repeat), or '*' for every tenant.")],
) -> None:
    """Create an API key and print it once (only its Argon2id hash is stored)."""
    from ledgerflow.audit.auth import SCOPES

    if unknown := [s for s in scope if s not in SCOPES]:
        console.print(f"[red]unknown scope(s) {', '.join(unknown)}[/red]: scopes are {', '.join(SCOPES)}")
        raise typer.Exit(2)
    try:
        created = _key_store_run(lambda keys: keys.create(name, scope, tenant))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"created key {created.row.id} ({created.row.name}): scopes {', '.join(created.row.scopes)}, "
        f"tenants {', '.join(created.row.tenants)}. It is shown once:"
    )
    out.print(created.key, soft_wrap=True)


@keys_app.command("list")
def keys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List API keys (never their secrets)."""
    rows = _key_store_run(lambda keys: keys.list(include_revoked=all_))
    table = Table(title=f"{len(rows)} key(s)")
    for col in ("id", "name", "scopes", "tenants", "created", "last used", "revoked"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            row.id,
            row.name,
            ", ".join(row.scopes),
            ", ".join(row.tenants),
            row.created_at.isoformat(timespec="seconds"),
            row.last_used_at.isoformat(timespec="seconds") if row.last_used_at else "-",
            row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (as `keys list` shows it).")]) -> None:
    """Revoke a key: its next request answers 401."""
    if not _key_store_run(lambda keys: keys.revoke(key_id)):
        console.print(f"[red]no live key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")


mapping_app = typer.Typer(help="Declarative mapping files (docs/mappings.md).", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")


@mapping_app.command("test")
def mapping_test(
    file: Annotated[Path, typer.Argument(help="The mapping file (YAML).")],
    input_: Annotated[Path, typer.Option("--input", help="A sample event body (JSON).")],
    event_type: Annotated[
        str | None, typer.Option(help="The event type (default: the body's `type`, as Standard Webhooks sends).")
    ] = None,
    tenant: Annotated[str, typer.Option(help="Tenant written into the record.")] = "test",
    setting: Annotated[
        list[str] | None, typer.Option(help="A tenant source option NAME=VALUE read by setting() (repeatable).")
    ] = None,
    expect: Annotated[Path | None, typer.Option(help="Golden file: exit 1 unless the record equals this JSON.")] = None,
) -> None:
    """Map SAMPLE with FILE and print the canonical record as JSON, or the validation errors.

    Exit codes: 0 mapped (and equal to --expect), 1 the record is invalid, skipped or differs from
    --expect, 2 the mapping file itself is broken (errors name FILE:LINE) or the sample is unreadable.
    """
    from pydantic import ValidationError

    from ledgerflow.contracts import ContractError
    from ledgerflow.transformers.base import SkipEvent
    from ledgerflow.transformers.declarative import MappingError, load_mapping, map_payload, parse_body

    try:
        mapping = load_mapping(file)
    except MappingError as exc:
        console.print(f"[red]{len(exc.problems)} problem(s) in the mapping file:[/red]")
        for problem in exc.problems:
            console.print(problem, markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        payload = parse_body(input_.read_bytes())
    except (OSError, ContractError) as exc:
        console.print(f"[red]cannot read the sample {input_}:[/red] {exc}", markup=True)
        raise typer.Exit(2) from None
    kind = event_type or (payload.get("type") if isinstance(payload, dict) else None)
    if not isinstance(kind, str) or not kind:
        console.print("[red]the sample has no string `type`: give --event-type[/red]")
        raise typer.Exit(2)
    options = dict(item.split("=", 1) for item in setting or [] if "=" in item)
    try:
        record = map_payload(mapping, payload, event_type=kind, tenant=tenant, settings=options)
    except SkipEvent as skip:
        console.print(f"[yellow]skipped:[/yellow] {skip.reason}", highlight=False)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        console.print(f"[red]the record does not satisfy the {exc.title} contract:[/red]")
        for err in exc.errors(include_url=False):
            console.print(f"  {'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}", highlight=False)
        raise typer.Exit(1) from None
    except ContractError as exc:
        console.print(f"[red]the record is invalid:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    actual = {"object_type": record.object_type, **orjson.loads(record.model_dump_json())}
    sys.stdout.write(orjson.dumps(actual, option=orjson.OPT_INDENT_2).decode() + "\n")
    if expect is not None:
        wanted = orjson.loads(expect.read_bytes())
        if wanted != actual:
            differing = sorted(k for k in {*wanted, *actual} if wanted.get(k) != actual.get(k))
            console.print(f"[red]differs from {expect} in:[/red] {', '.join(differing)}")
            raise typer.Exit(1)


@app.command()
def audit(
    port: Annotated[int | None, typer.Option(help="API port (default: LEDGERFLOW_AUDIT_PORT, 8081).")] = None,
) -> None:
    """Run the audit service: results consumer (group ledgerflow.audit) and the sync-records API (docs/audit.md)."""
    from ledgerflow.app.connections_cli import routing_check
    from ledgerflow.audit.main import run_audit
    from ledgerflow.audit.settings import AuditSettings

    settings = AuditSettings()
    _setup_logging(settings)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=True)
    writers = None if settings.state_url.startswith("sqlite") else settings.audit_concurrency
    routing = _load(settings) if settings.routing_file else None  # connections' rate limits (headroom)

    _serve_until_signal(
        run_audit(
            settings,
            bootstrap,
            embedded=False,
            host=settings.audit_host,
            port=settings.audit_port if port is None else port,
            concurrency=writers,
            oidc=settings.oidc(),
            routing=routing,
            connection_check=routing_check(settings),
            reference_connections=_reference_connections(routing),
            mapping_kinds=mapping_kind_use,
        ),
        settings,
        lambda audit_: f"audit API on {audit_.url}  (/v1/… /console /healthz /readyz /metrics)",
    )


def _reference_connections(routing: Routing | None) -> list[str]:
    """Connections the audit API takes on-demand reference sync requests for (ERPs with a reader)."""
    from ledgerflow.connectors.reference_main import reference_connections

    return reference_connections(routing) if routing is not None else []


@app.command()
def reconcile(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    since: Annotated[str, typer.Option(help="Start of the period (ISO 8601 date or time, inclusive).")],
    until: Annotated[str | None, typer.Option(help="End of the period (exclusive); default now.")] = None,
    connection: Annotated[str | None, typer.Option(help="Only this ERP connection.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the control totals as JSON.")] = False,
) -> None:
    """Control totals per connection, object and currency: accepted, booked, skipped, failed, pending, difference.

    Reads the audit store (LEDGERFLOW_STATE_URL). Exits 1 when a difference is not zero.
    """
    from ledgerflow.app.reconcile import control_totals, parse_moment, render

    settings = Settings()
    try:
        start, end = parse_moment(since), parse_moment(until) if until else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    routing = _load(settings) if settings.routing_file else None
    result = aio.run(
        control_totals(settings.state_url, routing, tenant=tenant, since=start, until=end, connection=connection),
        settings.event_loop,
    )
    if json_output:
        sys.stdout.write(orjson.dumps(result.as_json()).decode() + "\n")
    else:
        render(result, out)
    raise typer.Exit(0 if result.balanced else 1)


@app.command()
def replay(
    mode: Annotated[str, typer.Argument(help="'dlq' (dead letters → original topics) or 'raw' (raw events again)")],
    stage: Annotated[list[str] | None, typer.Option(help="dlq: stage(s) to read (default: all).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (ce_tenant).")] = None,
    since: Annotated[str | None, typer.Option(help="From this time, ISO 8601 (raw: required).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time, ISO 8601.")] = None,
    reason: Annotated[list[str] | None, typer.Option(help="dlq: only these reasons (ledgerflow_dlq_reason).")] = None,
    source: Annotated[str | None, typer.Option(help="raw: the source whose raw topic is replayed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count and list what would be replayed.")] = False,
) -> None:
    """Re-publish dead letters to their original topics, or a time range of raw events (docs/audit.md)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ledgerflow.app.replay import DeadLetterFilter, ReplaySummary, parse_time, replay_dead_letters, replay_raw
    from ledgerflow.audit.masking import mask_text
    from ledgerflow.contracts.topics import STAGES

    settings = Settings()
    _setup_logging(settings, quiet=True)
    bootstrap = _require_bootstrap(settings)
    _preflight(settings, kafka=bootstrap, state=False)
    try:
        start, end = parse_time(since), parse_time(until)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if mode not in ("dlq", "raw"):
        console.print(f"[red]unknown mode {mode!r}[/red]: use dlq or raw")
        raise typer.Exit(2)
    if mode == "raw" and (source is None or start is None):
        console.print("[red]raw replay needs --source and --since[/red]")
        raise typer.Exit(2)
    stages = tuple(stage or STAGES)
    if unknown := [s for s in stages if s not in STAGES]:
        console.print(f"[red]unknown stage(s) {', '.join(unknown)}[/red]: stages are {', '.join(STAGES)}")
        raise typer.Exit(2)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("scanning" if dry_run else "replaying", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async def run() -> ReplaySummary:
            if mode == "raw":
                assert source is not None
                assert start is not None
                return await replay_raw(
                    settings,
                    bootstrap,
                    source,
                    since=start,
                    until=end,
                    tenant=tenant,
                    dry_run=dry_run,
                    progress=progress,
                )
            filters = DeadLetterFilter(
                stages=stages, tenant=tenant, since=start, until=end, reasons=tuple(reason or ())
            )
            return await replay_dead_letters(settings, bootstrap, filters, dry_run=dry_run, progress=progress)

        summary = aio.run(run(), settings.event_loop)

    if dry_run:
        table = Table(title=f"would replay {summary.replayed} message(s)")
        for col in ("from", "time", "tenant", "reason", "detail", "ce_id", "to"):
            table.add_column(col, overflow="fold")
        for item in summary.items:
            table.add_row(
                f"{item.topic}:{item.partition}:{item.offset}",
                item.timestamp.isoformat(timespec="seconds"),
                item.tenant or "-",
                item.reason or "-",
                mask_text(item.detail) if item.detail else "-",
                item.ce_id or "-",
                item.target_topic,
            )
        out.print(table)
    verb = "would replay" if dry_run else "replayed"
    out.print(f"{verb} {summary.replayed}, skipped {summary.skipped} (scanned {summary.scanned})")
    if not summary.complete:
        console.print("[yellow]the broker stopped serving before the end offsets: the replay is incomplete[/yellow]")
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()


app.add_typer(connections_app, name="connections")

state_app = typer.Typer(help="The state store (binder, OAuth tokens, cursors, outbox).", no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command("migrate-keys")
def state_migrate_keys(
    connection: Annotated[str, typer.Option(help="ERP connection whose binder rows to move.")],
    tenant: Annotated[str, typer.Option(help="Tenant the connection's legacy rows belong to.")],
) -> None:
    """Give TENANT to the binder rows of CONNECTION written before keys carried the tenant.

    A connector moves its rows itself at start when one tenant feeds its connection; a connection
    shared by several tenants needs this command (run it once per connection, before its
    connector starts, with the tenant whose records the legacy rows are — the audit's sync
    records, filtered by connection, say whose they were).
    """
    from ledgerflow.core.state import StateStore

    settings = Settings()
    _setup_logging(settings, quiet=True)

    async def run() -> int:
        state = StateStore.from_settings(settings)
        try:
            await state.create_all()
            return await state.migrate_legacy_keys(connection, tenant)
        finally:
            await state.close()

    moved = aio.run(run(), settings.event_loop)
    out.print(f"moved {moved} binder row(s) of {connection} to tenant {tenant}")


def _register_commands() -> None:
    """Commands defined in their own modules (keeps this file's conflicts small)."""
    from ledgerflow.app.mappings_cli import register as register_mappings
    from ledgerflow.app.reference_cli import register as register_reference
    from ledgerflow.app.writeback_cli import register as register_writeback

    register_reference(app)
    register_writeback(app)
    register_mappings(app)


_register_commands()
