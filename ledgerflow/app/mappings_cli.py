r"""``ledgerflow mappings``: per tenant and connection, source codes → ERP ids, kept in the state store.

Examples::

    ledgerflow mappings set --tenant acme --connection xero-main --kind gl_account materials 400
    ledgerflow mappings list --tenant acme --connection xero-main
    ledgerflow mappings remove --tenant acme --connection xero-main --kind gl_account materials
    ledgerflow mappings import codes.csv --tenant acme --connection xero-main       # kind,source_code,erp_id

Every ERP id is validated against the connection's reference cache (what ``ledgerflow
sync-reference`` read): an id absent from a complete cache of its kind, or inactive there, is
refused with the reason; so is any id of a kind never synced. ``--force`` stores it anyway,
with a warning. Refused whatever ``--force`` says: a connection that does not exist, a tenant
that does not route to it, and a kind its connector does not use (QuickBooks ``tax_rate``: the
refusal names what the connection uses instead), the same check as ``PUT /v1/mappings``.
The connector runtime applies the tables together with the connection's
``options.reference_map`` (a stored mapping wins; ``connectors/preflight.py``) within
``options.reference_refresh_seconds`` (10 s) of a change. docs/mappings.md has the details.
"""

from __future__ import annotations

import csv
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ledgerflow.connectors.registry import mapping_kind_use
from ledgerflow.core import aio
from ledgerflow.core.mapping_targets import mapping_routing, target_problem
from ledgerflow.core.reference_cache import MAPPING_KINDS, MappingStore, StoredMapping
from ledgerflow.core.settings import ConfigError, Routing, Settings
from ledgerflow.core.state import StateStore

__all__ = ["mappings_app", "register"]

T = TypeVar("T")

mappings_app = typer.Typer(
    help="Source code → ERP id tables per tenant and connection (validated against the reference cache).",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()

Tenant = Annotated[str, typer.Option(help="Tenant whose records the mapping applies to.")]
Connection = Annotated[str, typer.Option(help="ERP connection (routing file or stored).")]
Kind = Annotated[str, typer.Option(help=f"Reference kind: {', '.join(MAPPING_KINDS)}.")]
Force = Annotated[bool, typer.Option("--force", help="Store ids the reference cache cannot confirm (with a warning).")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (container without passwd entry)
        return "cli"


def _target(settings: Settings, tenant: str, connection: str) -> Routing:
    """The routing, after exit 2 unless ``connection`` exists (routing file or stored) and ``tenant`` routes to it.

    The same check as ``PUT /v1/mappings`` (:func:`ledgerflow.core.mapping_targets.target_problem`).
    """
    try:
        routing = aio.run(mapping_routing(settings), settings.event_loop)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
        raise  # unreachable
    if problem := target_problem(routing, tenant, connection, None, None):
        _fail(problem.detail)
    return routing


def _unused(routing: Routing, tenant: str, connection: str, kind: str) -> str | None:
    """Why ``connection``'s connector does not use ``kind`` mappings (naming what it uses instead), or None."""
    problem = target_problem(routing, tenant, connection, kind, mapping_kind_use)
    return problem.detail if problem is not None else None


def _run(settings: Settings, work: Callable[[MappingStore], Awaitable[T]]) -> T:
    """Run ``work`` against the state store of ``settings`` (tables created if missing)."""

    async def main() -> T:
        state = StateStore.from_settings(settings)
        try:
            await state.create_all()
            return await work(MappingStore(state))
        finally:
            await state.close()

    return aio.run(main(), settings.event_loop)


def _kind(kind: str) -> None:
    if kind not in MAPPING_KINDS:
        _fail(f"unknown kind {kind!r} (one of {', '.join(MAPPING_KINDS)})")


@mappings_app.command("set")
def set_(
    source_code: Annotated[str, typer.Argument(help="The code or id the source sends (any reference key).")],
    erp_id: Annotated[str, typer.Argument(help="The ERP's id (or code, where the ERP takes codes) to send.")],
    tenant: Tenant,
    connection: Connection,
    kind: Kind,
    force: Force = False,
) -> None:
    """Map SOURCE_CODE to ERP_ID for KIND on CONNECTION for TENANT (replacing any mapping of that code)."""
    _kind(kind)
    settings = Settings()
    routing = _target(settings, tenant, connection)
    if unused := _unused(routing, tenant, connection, kind):
        _fail(f"{kind} {source_code} → {erp_id} refused: {unused}")

    async def work(store: MappingStore) -> str | None:
        verdict = await store.validate(connection, kind, erp_id, force=force)
        if not verdict.accepted:
            return verdict.reason or "refused"
        await store.put(tenant, connection, kind, source_code, erp_id, by=_operator())
        if verdict.warning:
            _warn(verdict.warning)
        return None

    refused = _run(settings, work)
    if refused:
        _fail(f"{kind} {source_code} → {erp_id} refused: {refused}")
    out.print(f"{tenant} {connection} {kind}: {source_code} → {erp_id}", highlight=False)


@mappings_app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    connection: Annotated[str | None, typer.Option(help="Only this connection.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """List stored mappings (ordered by tenant, connection, kind, source code)."""
    rows: list[StoredMapping] = _run(
        Settings(), lambda store: store.list(tenant=tenant, connection=connection, kind=kind)
    )
    if as_json:
        data = [
            {
                "tenant": r.tenant,
                "connection": r.connection,
                "kind": r.kind,
                "source_code": r.source_code,
                "erp_id": r.erp_id,
                "updated_at": r.updated_at.isoformat(),
                "updated_by": r.updated_by,
            }
            for r in rows
        ]
        out.print_json(orjson.dumps(data).decode())
        return
    table = Table(title=f"{len(rows)} mapping(s)")
    for col in ("tenant", "connection", "kind", "source code", "ERP id", "updated", "by"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.tenant,
            r.connection,
            r.kind,
            r.source_code,
            r.erp_id,
            r.updated_at.isoformat(timespec="seconds"),
            r.updated_by or "-",
        )
    out.print(table)


@mappings_app.command("remove")
def remove(
    source_code: Annotated[str, typer.Argument(help="The source code whose mapping to delete.")],
    tenant: Tenant,
    connection: Connection,
    kind: Kind,
) -> None:
    """Delete one mapping (the YAML ``options.reference_map`` entry, if any, applies again). Exit 1 if none."""
    _kind(kind)
    if not _run(Settings(), lambda store: store.remove(tenant, connection, kind, source_code)):
        console.print(f"no {kind} mapping of {source_code!r} for {tenant} on {connection}", highlight=False)
        raise typer.Exit(1)
    out.print(f"removed {tenant} {connection} {kind}: {source_code}", highlight=False)


@mappings_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV: kind,source_code,erp_id (header).")],
    tenant: Tenant,
    connection: Connection,
    kind: Annotated[str | None, typer.Option(help="Kind of every row (then the CSV needs no kind column).")] = None,
    force: Force = False,
) -> None:
    """Set every mapping of a CSV file (header ``kind,source_code,erp_id``; ``kind`` optional with --kind).

    All or nothing: every row is validated first; if one is refused, each refused row is printed
    with its line number and nothing is stored (exit 2).
    """
    if kind is not None:
        _kind(kind)
    settings = Settings()
    routing = _target(settings, tenant, connection)
    with file.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        needed = {"source_code", "erp_id"} | (set() if kind else {"kind"})
        missing = needed - set(reader.fieldnames or [])
        if missing:
            _fail(f"{file}: missing column(s) {', '.join(sorted(missing))} (header: kind,source_code,erp_id)")
        rows: list[tuple[int, str, str, str]] = []
        problems: list[str] = []
        for row in reader:
            line = reader.line_num
            row_kind = (row.get("kind") or kind or "").strip()
            code, erp_id = (row.get("source_code") or "").strip(), (row.get("erp_id") or "").strip()
            if row_kind not in MAPPING_KINDS:
                problems.append(f"{file}:{line}: unknown kind {row_kind!r}")
            elif unused := _unused(routing, tenant, connection, row_kind):
                problems.append(f"{file}:{line}: {unused}")
            elif not code or not erp_id:
                problems.append(f"{file}:{line}: source_code and erp_id must not be empty")
            else:
                rows.append((line, row_kind, code, erp_id))

    async def work(store: MappingStore) -> tuple[list[str], list[str]]:
        refused, warnings = list(problems), []
        for line, row_kind, code, erp_id in rows:
            verdict = await store.validate(connection, row_kind, erp_id, force=force)
            if not verdict.accepted:
                refused.append(f"{file}:{line}: {row_kind} {code} → {erp_id}: {verdict.reason}")
            elif verdict.warning:
                warnings.append(f"{file}:{line}: {verdict.warning}")
        if refused:
            return refused, warnings
        await store.put_many(tenant, connection, [(k, code, erp_id) for _, k, code, erp_id in rows], by=_operator())
        return [], warnings

    refused, warnings = _run(settings, work)
    for warning in warnings:
        _warn(warning)
    if refused:
        console.print(f"[red]{len(refused)} row(s) refused, nothing stored:[/red]")
        for problem in refused:
            console.print(problem, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    out.print(f"imported {len(rows)} mapping(s) for {tenant} on {connection}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``mappings`` to ``app``."""
    app.add_typer(mappings_app, name="mappings")
