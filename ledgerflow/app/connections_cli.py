r"""``ledgerflow connections``: ERP connections kept in the state store (credentials encrypted).

Examples::

    export LEDGERFLOW_CONNECTIONS_KEY_FILE=/run/secrets/ledgerflow-connections/key
    ledgerflow connections add xero-acme --erp xero --tenant acme --object bill --object vendor \\
        --credential tenant_id=... --credential client_id=... --credential client_secret=... \\
        --credential refresh_token=...
    ledgerflow connections list
    ledgerflow connections show xero-acme
    ledgerflow connections update xero-acme --credential refresh_token=... --option create_vendors=true
    ledgerflow connections disable xero-acme     # the row stays; no worker routes to it
    ledgerflow connections enable xero-acme
    ledgerflow connections remove xero-acme

Workers read the enabled connections when they start and merge them into the routing file's
(:func:`ledgerflow.core.connections.merge_routing`). Nothing here prints a credential value:
``list`` and ``show`` print the credential key names only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ledgerflow.connectors.registry import ERP_KINDS, ERPS, connection_problem
from ledgerflow.core import aio
from ledgerflow.core.connections import (
    ConnectionCipher,
    ConnectionStore,
    validate_connection,
)
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Settings
from ledgerflow.core.state import StateStore

__all__ = ["connections_app"]

T = TypeVar("T")

connections_app = typer.Typer(
    help="ERP connections kept in the state store (credentials encrypted with LEDGERFLOW_CONNECTIONS_KEY).",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()


def _pairs(values: list[str] | None, what: str, *, parse: bool) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict; ``parse`` reads each value as a YAML scalar (``true``, ``5``).

    Raises:
        typer.BadParameter: a value without ``=`` or with an empty key.
    """
    result: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Never echo the item: it may be a credential.
            raise typer.BadParameter(f"{what} must be KEY=VALUE (got one without '=' or without a key)")
        result[key.strip()] = yaml.safe_load(value) if parse and value else value
    return result


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _run(settings: Settings, work: Callable[[ConnectionStore], Awaitable[T]]) -> T:
    """Run ``work`` against the state store of ``settings`` (tables created if missing)."""

    async def main() -> T:
        state = StateStore.from_settings(settings)
        try:
            await state.create_all()
            return await work(ConnectionStore(state, ConnectionCipher.from_settings(settings)))
        finally:
            await state.close()

    try:
        return aio.run(main(), settings.event_loop)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _checked(name: str, config: ConnectionConfig, tenants: list[str], settings: Settings) -> None:
    """Refuse what the workers would refuse when merging (one line, exit 2).

    That is: an unknown ERP kind, options or credentials the ERP's ``config.py`` rejects, a name
    the routing file has, a tenant it does not have.
    """
    if config.erp not in ERPS:
        _fail(f"unknown ERP kind {config.erp!r} (known: {', '.join(ERP_KINDS)})")
    problem = connection_problem(name, config)
    if problem:
        _fail(f"invalid connection settings: {problem}")
    routing = settings.load_routing()
    if name in routing.connections:
        _fail(f"connection {name!r} is already defined in the routing file; choose another name")
    unknown = [t for t in tenants if t not in routing.tenants]
    if unknown:
        _fail(f"tenant(s) {', '.join(map(repr, unknown))} not in the routing (known: {', '.join(routing.tenants)})")


@connections_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Connection name (consumer group ledgerflow.connector.<name>).")],
    erp: Annotated[str, typer.Option(help=f"ERP kind: {', '.join(ERP_KINDS)}.")],
    tenant: Annotated[list[str], typer.Option(help="Tenant whose records go to this connection (repeatable).")],
    base_url: Annotated[str | None, typer.Option(help="API base URL; unset = the local sandbox.")] = None,
    object_: Annotated[
        list[str] | None, typer.Option("--object", help="Canonical object type taken (repeatable; default bill).")
    ] = None,
    credential: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="ERP credential (repeatable; stored encrypted).")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Connector option, value read as YAML (repeatable).")
    ] = None,
) -> None:
    """Store a new, enabled ERP connection; workers started afterwards route to it."""
    settings = Settings()
    try:
        config = validate_connection(
            name,
            erp=erp,
            base_url=base_url,
            objects=object_ or ["bill"],
            credentials=_pairs(credential, "--credential", parse=False),
            options=_pairs(option, "--option", parse=True),
        )
    except ConfigError as exc:
        _fail(str(exc))
    _checked(name, config, tenant, settings)

    async def work(store: ConnectionStore) -> None:
        await store.add(name, config, tenant)

    _run(settings, work)
    out.print(f"connection {name!r} added ({erp}, tenant(s) {', '.join(tenant)})", highlight=False)


@connections_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="Stored connection name.")],
    tenant: Annotated[
        list[str] | None, typer.Option(help="Tenants (repeatable; replaces the list when given).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="New API base URL.")] = None,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Clear the base URL (the local sandbox).")] = False,
    object_: Annotated[
        list[str] | None, typer.Option("--object", help="Object types (repeatable; replaces the list when given).")
    ] = None,
    credential: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Set a credential (repeatable; others kept).")
    ] = None,
    drop_credential: Annotated[list[str] | None, typer.Option(metavar="KEY", help="Remove a credential.")] = None,
    option: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Set an option (repeatable; others kept).")
    ] = None,
    drop_option: Annotated[list[str] | None, typer.Option(metavar="KEY", help="Remove an option.")] = None,
) -> None:
    """Change a stored connection; credentials are re-encrypted with the first configured key."""
    settings = Settings()
    credentials = _pairs(credential, "--credential", parse=False)
    options = _pairs(option, "--option", parse=True)

    async def work(store: ConnectionStore) -> None:
        current = await store.get(name)
        if current is None:
            raise ConfigError(f"no stored connection named {name!r}")
        merged_credentials = {k: v.get_secret_value() for k, v in current.config.credentials.items()}
        merged_credentials.update(credentials)
        merged_options = {**current.config.options, **options}
        for key in drop_credential or []:
            merged_credentials.pop(key, None)
        for key in drop_option or []:
            merged_options.pop(key, None)
        config = validate_connection(
            name,
            erp=current.config.erp,
            base_url=None if sandbox else (base_url or current.config.base_url),
            objects=object_ or current.config.objects,
            credentials=merged_credentials,
            options=merged_options,
        )
        tenants = tenant or current.tenants
        _checked(name, config, tenants, settings)
        await store.replace(name, config, tenants)

    _run(settings, work)
    out.print(f"connection {name!r} updated", highlight=False)


def _summaries(settings: Settings) -> list[dict[str, Any]]:
    async def work(store: ConnectionStore) -> list[dict[str, Any]]:
        return await store.summaries()

    return _run(settings, work)


@connections_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array instead of a table.")] = False,
) -> None:
    """The stored connections (credential key names only, never their values)."""
    rows = _summaries(Settings())
    if as_json:
        out.print_json(orjson.dumps(rows).decode())
        return
    table = Table("name", "erp", "tenants", "objects", "base_url", "credentials", "enabled")
    for row in rows:
        table.add_row(
            row["name"],
            row["erp"],
            ", ".join(row["tenants"]),
            ", ".join(row["objects"]),
            row["base_url"] or "(sandbox)",
            ", ".join(row["credentials"]),
            "yes" if row["enabled"] else "no",
        )
    out.print(table)


@connections_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Stored connection name.")]) -> None:
    """One stored connection as JSON (credential key names only, never their values)."""
    row = next((r for r in _summaries(Settings()) if r["name"] == name), None)
    if row is None:
        _fail(f"no stored connection named {name!r}")
    out.print_json(orjson.dumps(row).decode())


def _set_enabled(name: str, enabled: bool) -> None:
    async def work(store: ConnectionStore) -> bool:
        return await store.set_enabled(name, enabled)

    if not _run(Settings(), work):
        _fail(f"no stored connection named {name!r}")
    out.print(f"connection {name!r} {'enabled' if enabled else 'disabled'}", highlight=False)


@connections_app.command("disable")
def disable(name: Annotated[str, typer.Argument(help="Stored connection name.")]) -> None:
    """Keep the connection but stop routing to it (workers started afterwards skip it)."""
    _set_enabled(name, False)


@connections_app.command("enable")
def enable(name: Annotated[str, typer.Argument(help="Stored connection name.")]) -> None:
    """Route to a disabled connection again."""
    _set_enabled(name, True)


@connections_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="Stored connection name.")]) -> None:
    """Delete a stored connection (its binder rows and OAuth tokens stay, under its name)."""

    async def work(store: ConnectionStore) -> bool:
        return await store.remove(name)

    if not _run(Settings(), work):
        _fail(f"no stored connection named {name!r}")
    out.print(f"connection {name!r} removed", highlight=False)
