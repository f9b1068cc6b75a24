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

    # OAuth 2.0 consent (authorization code + PKCE): prints the vendor's consent URL
    LEDGERFLOW_OAUTH_CLIENT_ID=... LEDGERFLOW_OAUTH_CLIENT_SECRET=... \\
    ledgerflow connections connect xero --tenant acme --name xero-acme \\
        --redirect-uri https://ledgerflow.example.com/oauth/callback
    ledgerflow connections complete --url 'https://ledgerflow.example.com/oauth/callback?code=...&state=...'

Workers read the enabled connections when they start and merge them into the routing file's
(:func:`ledgerflow.core.connections.merge_routing`). Nothing here prints a credential value:
``list`` and ``show`` print the credential key names only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ledgerflow.connectors.registry import ERP_KINDS, ERPS, connection_problem
from ledgerflow.core import aio
from ledgerflow.core.connections import (
    ConnectionAdmin,
    ConnectionChanges,
    ConnectionCheck,
    ConnectionCipher,
    ConnectionConflict,
    ConnectionStore,
)
from ledgerflow.core.oauth_connect import PROVIDERS, Consent, OAuthConnect
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Settings
from ledgerflow.core.state import StateStore

__all__ = ["connections_app", "routing_check"]

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


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def routing_check(settings: Settings) -> ConnectionCheck:
    """What the workers would refuse when merging a stored connection, as a :data:`ConnectionCheck`.

    That is: an unknown ERP kind, options or credentials the ERP's ``config.py`` rejects, a name
    the routing file has (raised as :class:`ConnectionConflict`), a tenant it does not have. The
    routing file is read at each call (the audit service's API uses the same check for
    ``/v1/stored-connections``).
    """

    def check(name: str, config: ConnectionConfig, tenants: Sequence[str]) -> str | None:
        if config.erp not in ERPS:
            return f"unknown ERP kind {config.erp!r} (known: {', '.join(ERP_KINDS)})"
        problem = connection_problem(name, config)
        if problem:
            return f"invalid connection settings: {problem}"
        routing = settings.load_routing()
        if name in routing.connections:
            raise ConnectionConflict(f"connection {name!r} is already defined in the routing file; choose another name")
        unknown = [t for t in tenants if t not in routing.tenants]
        if unknown:
            return f"tenant(s) {', '.join(map(repr, unknown))} not in the routing (known: {', '.join(routing.tenants)})"
        return None

    return check


def _run(settings: Settings, work: Callable[[ConnectionAdmin], Awaitable[T]]) -> T:
    """Run ``work`` against the state store of ``settings`` (tables created if missing); a ConfigError exits 2."""

    async def main() -> T:
        state = StateStore.from_settings(settings)
        try:
            await state.create_all()
            store = ConnectionStore(state, ConnectionCipher.from_settings(settings))
            return await work(ConnectionAdmin(store, routing_check(settings)))
        finally:
            await state.close()

    try:
        return aio.run(main(), settings.event_loop)
    except ConfigError as exc:
        _fail(str(exc))


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
    credentials = _pairs(credential, "--credential", parse=False)
    options = _pairs(option, "--option", parse=True)

    async def work(admin: ConnectionAdmin) -> None:
        await admin.add(
            name,
            erp=erp,
            tenants=tenant,
            base_url=base_url,
            objects=object_ or ["bill"],
            credentials=credentials,
            options=options,
        )

    _run(Settings(), work)
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
    changes = ConnectionChanges(
        tenants=tenant,
        base_url=base_url,
        sandbox=sandbox,
        objects=object_,
        set_credentials=_pairs(credential, "--credential", parse=False),
        drop_credentials=drop_credential or (),
        set_options=_pairs(option, "--option", parse=True),
        drop_options=drop_option or (),
    )

    async def work(admin: ConnectionAdmin) -> None:
        await admin.update(name, changes)

    _run(Settings(), work)
    out.print(f"connection {name!r} updated", highlight=False)


def _summaries(settings: Settings) -> list[dict[str, Any]]:
    async def work(admin: ConnectionAdmin) -> list[dict[str, Any]]:
        return await admin.store.summaries()

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

    async def work(admin: ConnectionAdmin) -> dict[str, Any]:
        return await admin.show(name)

    out.print_json(orjson.dumps(_run(Settings(), work)).decode())


def _set_enabled(name: str, enabled: bool) -> None:
    async def work(admin: ConnectionAdmin) -> None:
        await admin.set_enabled(name, enabled)

    _run(Settings(), work)
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

    async def work(admin: ConnectionAdmin) -> None:
        await admin.remove(name)

    _run(Settings(), work)
    out.print(f"connection {name!r} removed", highlight=False)


@connections_app.command("connect")
def connect(
    erp: Annotated[str, typer.Argument(help=f"ERP kind: {', '.join(PROVIDERS)}.")],
    name: Annotated[str, typer.Option(help="Name of the connection to create (--reconnect: the stored one).")],
    redirect_uri: Annotated[
        str, typer.Option(help="Redirect URI registered with the app: the audit service's /oauth/callback.")
    ],
    client_id: Annotated[
        str, typer.Option(envvar="LEDGERFLOW_OAUTH_CLIENT_ID", help="The app's OAuth client id.", show_default=False)
    ],
    client_secret: Annotated[
        str,
        typer.Option(
            envvar="LEDGERFLOW_OAUTH_CLIENT_SECRET",
            help="The app's OAuth client secret (prefer the environment, e.g. from a Secret).",
            show_default=False,
        ),
    ],
    base_url: Annotated[str | None, typer.Option(help="API base URL; unset = the local sandbox.")] = None,
    object_: Annotated[
        list[str] | None, typer.Option("--object", help="Canonical object type taken (repeatable; default bill).")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Connector option, value read as YAML (repeatable).")
    ] = None,
    scope: Annotated[
        str | None, typer.Option(help="Scopes to ask for (default: the vendor's accounting scopes).")
    ] = None,
    oauth_root: Annotated[
        str | None,
        typer.Option(
            help="Origin serving the vendor's authorize/token paths (a sandbox; needs "
            "LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT=true: the client secret is sent there)."
        ),
    ] = None,
    xero_tenant_id: Annotated[
        str | None, typer.Option(help="Xero organisation to use when the consent grants several.")
    ] = None,
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="Tenant whose records go to this connection (repeatable; required unless --reconnect)."),
    ] = None,
    reconnect: Annotated[
        bool,
        typer.Option(
            "--reconnect",
            help="Re-consent the stored connection --name in place: only its credentials and tokens are replaced; "
            "refused when the consent is for another QuickBooks company or Xero organisation.",
        ),
    ] = False,
) -> None:
    """Start the OAuth 2.0 consent (authorization code + PKCE): print the URL to open; valid 10 minutes.

    After the consent the vendor redirects to --redirect-uri: the audit service's /oauth/callback
    stores the connection, or paste the URL the browser was sent to into `ledgerflow connections complete`.
    With --reconnect (an expired or revoked consent) the stored connection keeps its name, tenants,
    objects and options; the callback replaces its credentials and tokens.
    """
    options = _pairs(option, "--option", parse=True)
    if not tenant and not reconnect:
        raise typer.BadParameter("at least one --tenant is required (unless --reconnect)", param_hint="--tenant")
    settings = Settings()

    async def work(admin: ConnectionAdmin) -> Consent:
        return await OAuthConnect(admin, allow_custom_root=settings.oauth_allow_custom_root).start(
            erp,
            name=name,
            tenants=tenant,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            base_url=base_url,
            objects=object_,
            options=options,
            oauth_root=oauth_root,
            scope=scope,
            xero_tenant_id=xero_tenant_id,
            requested_by="cli",
            reconnect=reconnect,
        )

    consent = _run(settings, work)
    console.print(
        f"Open this URL to consent (valid until {consent.expires_at:%H:%M:%S} UTC); the vendor redirects to "
        f"{redirect_uri}:",
        highlight=False,
    )
    out.print(consent.url, highlight=False, soft_wrap=True)


@connections_app.command("complete")
def complete(
    url: Annotated[str, typer.Option(help="The whole URL the vendor redirected the browser to (code, state…).")],
) -> None:
    """Finish a consent headless: exchange the code of the callback URL and store the connection."""

    async def work(admin: ConnectionAdmin) -> dict[str, Any]:
        return await OAuthConnect(admin).complete_url(url)

    summary = _run(Settings(), work)
    out.print(
        f"connection {summary['name']!r} connected ({summary['erp']}, tenant(s) {', '.join(summary['tenants'])})",
        highlight=False,
    )
