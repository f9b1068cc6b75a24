"""ERP connections kept in the state store, over the API: the operations of ``ledgerflow connections``.

Mounted by :func:`ledgerflow.audit.api.create_app` (paths under ``/v1``, except the OAuth callback):

``GET /v1/stored-connections``, ``GET /v1/stored-connections/{name}`` (read)
    The stored connections the caller sees: a connection is visible when the caller sees every
    tenant it serves. Credentials are write-only: only their key names are ever answered.
``POST /v1/stored-connections``, ``PATCH /v1/stored-connections/{name}``,
``POST /v1/stored-connections/{name}/disable|enable``, ``DELETE /v1/stored-connections/{name}`` (admin)
    Add, change (credentials and options merged key by key), disable, enable, remove: the same
    validation as the command (:class:`~ledgerflow.core.connections.ConnectionAdmin` with the
    composition layer's check: ERP kind, its options and credentials, the routing file's names
    and tenants). A tenant the caller does not see answers 404.
``POST /v1/stored-connections/connect`` (admin)
    Start the OAuth 2.0 consent of a QuickBooks or Xero connection (authorization code + PKCE,
    :mod:`ledgerflow.core.oauth_connect`): answers the consent URL, valid 10 minutes.
``GET /oauth/callback?code=…&state=…[&realmId=…]`` (public)
    Where the vendor sends the browser back: the single-use, unguessable ``state`` (its pending
    authorization was made by an admin) is the only credential; an unknown, replayed or expired
    state, a refused consent or a code the vendor refuses answers a 400 problem, and nothing is stored.

Every error is an RFC 9457 problem: 400 invalid, 404 unknown or not visible, 409 name taken,
502 the vendor's token endpoint unreachable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ledgerflow.audit.auth import Authenticator, Principal, forbidden
from ledgerflow.core.cipher import ConnectionCipher
from ledgerflow.core.connections import (
    ConnectionAdmin,
    ConnectionChanges,
    ConnectionCheck,
    ConnectionConflict,
    ConnectionNotFound,
    ConnectionStore,
)
from ledgerflow.core.oauth_connect import ConsentError, CustomRootError, OAuthConnect, TokenExchangeError
from ledgerflow.core.problems import Problem, problem_doc
from ledgerflow.core.settings import ConfigError, Settings
from ledgerflow.core.state import StateStore

__all__ = ["CALLBACK_PATH", "install_connections"]

CALLBACK_PATH = "/oauth/callback"
"""The OAuth redirect URI's path on the audit service (register ``https://<audit host>/oauth/callback``)."""

_TEXT = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Tenant = Annotated[str, Field(min_length=1, max_length=100, pattern=_TEXT)]
Key = Annotated[str, Field(min_length=1, max_length=100, pattern=_TEXT)]
Value = Annotated[str, Field(max_length=10_000)]
Url = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
ObjectType = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z_]+$")]


class StoredConnectionOut(BaseModel):
    """A stored ERP connection (credential key names, never their values)."""

    name: str = Field(description="Connection name (consumer group `ledgerflow.connector.<name>`).")
    erp: str = Field(description="ERP kind.")
    tenants: list[str] = Field(description="Tenants whose records go to this connection.")
    base_url: str | None = Field(description="API base URL; null = the local sandbox.")
    objects: list[str] = Field(description="Canonical object types taken.")
    options: dict[str, Any] = Field(description="Connector options.")
    credentials: list[str] = Field(description="Names of the stored credentials (values are write-only).")
    enabled: bool = Field(description="Whether workers route to it.")
    created_at: datetime = Field(description="Created.")
    updated_at: datetime = Field(description="Last changed.")


class StoredConnectionIn(BaseModel):
    """A connection to store (credentials are encrypted at rest and never answered)."""

    name: Name = Field(description="Connection name: letters, digits, `.`, `_`, `-`.")
    erp: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9_]+$")] = Field(description="ERP kind.")
    tenants: list[Tenant] = Field(min_length=1, max_length=100, description="Tenants served.")
    base_url: Url | None = Field(None, description="API base URL; null = the local sandbox.")
    objects: list[ObjectType] = Field(["bill"], min_length=1, max_length=20, description="Object types taken.")
    credentials: dict[Key, Value] = Field({}, max_length=50, description="ERP credentials (write-only).")
    options: dict[Key, Any] = Field({}, max_length=100, description="Connector options.")


class StoredConnectionPatch(BaseModel):
    """Changes to a stored connection: absent fields are kept; credentials and options merge key by key."""

    tenants: list[Tenant] | None = Field(None, min_length=1, max_length=100, description="Replace the tenants.")
    base_url: Url | None = Field(None, description="New API base URL.")
    sandbox: bool = Field(False, description="Clear the base URL (the local sandbox).")
    objects: list[ObjectType] | None = Field(None, min_length=1, max_length=20, description="Replace the objects.")
    credentials: dict[Key, Value] = Field({}, max_length=50, description="Credentials to set (write-only).")
    drop_credentials: list[Key] = Field([], max_length=50, description="Credentials to remove.")
    options: dict[Key, Any] = Field({}, max_length=100, description="Options to set.")
    drop_options: list[Key] = Field([], max_length=100, description="Options to remove.")


class ConnectIn(BaseModel):
    """An OAuth 2.0 consent to start (authorization code + PKCE)."""

    erp: Literal["quickbooks", "xero"] = Field(description="ERP kind.")
    name: Name = Field(description="Name of the connection to create (`reconnect`: the stored one).")
    tenants: list[Tenant] | None = Field(
        None, min_length=1, max_length=100, description="Tenants served (required unless `reconnect`)."
    )
    client_id: Annotated[str, Field(min_length=1, max_length=500)] = Field(description="The app's OAuth client id.")
    client_secret: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        description="The app's OAuth client secret (stored encrypted, never answered)."
    )
    redirect_uri: Url | None = Field(
        None,
        description="Redirect URI registered with the app; default: `<LEDGERFLOW_PUBLIC_URL>/oauth/callback`, "
        "or this service's `/oauth/callback` on the URL the request came in on when that is unset.",
    )
    base_url: Url | None = Field(None, description="API base URL; null = the local sandbox.")
    objects: list[ObjectType] | None = Field(
        None, min_length=1, max_length=20, description="Object types taken; default `[bill]`."
    )
    options: dict[Key, Any] = Field({}, max_length=100, description="Connector options.")
    scope: Annotated[str, Field(min_length=1, max_length=500, pattern=_TEXT)] | None = Field(
        None, description="Scopes to ask for; default: the vendor's accounting scopes."
    )
    oauth_root: Url | None = Field(
        None,
        description="Origin serving the vendor's authorize/token paths (a sandbox); null = the vendor's. "
        "Refused (403 `oauth-root-not-allowed`) unless the service runs with LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT=true.",
    )
    xero_tenant_id: Annotated[str, Field(min_length=1, max_length=100, pattern=_TEXT)] | None = Field(
        None, description="Xero organisation to use when the consent grants several."
    )
    reconnect: bool = Field(
        False,
        description="Re-consent the stored connection `name` in place: the callback replaces its credentials and "
        "tokens only (tenants, base URL, objects, options kept) and answers 409 `organisation-mismatch` when "
        "the consent is for another QuickBooks company (realmId) or Xero organisation (tenantId).",
    )


class ConsentOut(BaseModel):
    """A started consent: open `url` in a browser before `expires_at`."""

    url: str = Field(description="The vendor's consent URL (carries the state and the PKCE challenge).")
    expires_at: datetime = Field(description="When the pending authorization expires.")
    connection: str = Field(description="The connection it creates.")
    erp: str = Field(description="ERP kind.")
    redirect_uri: str = Field(description="Where the vendor sends the browser back (must be registered with the app).")


class ConnectedOut(BaseModel):
    """A consent completed: the connection is stored."""

    status: Literal["connected"] = Field(description="Always `connected`.")
    connection: StoredConnectionOut = Field(description="The stored connection.")


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed or invalid request (detail says which field).",
        401: "No credential, or an unknown, revoked or invalid one.",
        403: "The credential lacks the scope this operation needs (or `oauth_root` is not allowed here).",
        404: "Unknown connection, or one serving a tenant the caller does not see.",
        409: "A connection of that name exists (stored, or in the routing file); or a reconnect's consent "
        "is for another company / organisation (`organisation-mismatch`).",
        502: "The vendor's token endpoint could not be reached or answered nonsense.",
        503: "The connections key (LEDGERFLOW_CONNECTIONS_KEY_FILE) is configured but unusable.",
    }
    return {status: problem_doc(text[status]) for status in (*statuses, 503)}


def _problem(exc: ConfigError) -> Problem:
    """The problem answering a refused connection operation (never echoes a credential)."""
    if isinstance(exc, ConnectionNotFound):
        return Problem(404, "not-found", "Not found", str(exc))
    if isinstance(exc, ConnectionConflict):
        return Problem(409, "conflict", "Conflict", str(exc))
    if isinstance(exc, CustomRootError):
        return Problem(403, "oauth-root-not-allowed", "Custom OAuth root not allowed", str(exc))
    if isinstance(exc, ConsentError) and exc.kind == "organisation-mismatch":
        return Problem(409, exc.kind, "Consent for another organisation", str(exc))
    if isinstance(exc, ConsentError):
        return Problem(400, exc.kind, "OAuth callback refused", str(exc))
    if isinstance(exc, TokenExchangeError):
        slug = "token-exchange-refused" if exc.status == 400 else "token-endpoint-unavailable"
        return Problem(exc.status, slug, "Token exchange failed", str(exc))
    return Problem(400, "invalid-connection", "Invalid connection", str(exc))


class _Context:
    """What the routes share: the store (made at first use), the check, the OAuth transport."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        check: ConnectionCheck | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.check = check
        self.transport = transport
        self._admin: ConnectionAdmin | None = None

    async def admin(self) -> ConnectionAdmin:
        if self._admin is None:
            try:
                cipher = ConnectionCipher.from_settings(self.settings)
            except ConfigError as exc:
                raise Problem(503, "not-configured", "Connections key unusable", str(exc)) from None
            store = ConnectionStore(StateStore.on_engine(self.engine, cipher=cipher), cipher)
            admin = ConnectionAdmin(store, self.check)
            await OAuthConnect(admin).create_table()
            self._admin = admin
        return self._admin


_bearer = HTTPBearer(auto_error=False, description="An API key (`lfk_…`) or an OIDC access token.")


async def _principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller (as :func:`ledgerflow.audit.api.authenticated`: ``app.state.authenticator``)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(credentials.credentials if credentials else None)


async def _reader(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not principal.can("read"):
        raise forbidden("this operation needs the 'read' scope")
    return principal


async def _writer(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not principal.can("admin"):
        raise forbidden("this operation needs the 'admin' scope")
    return principal


async def _admin(request: Request) -> ConnectionAdmin:
    context: _Context = request.app.state.stored_connections
    return await context.admin()


def _transport(request: Request) -> httpx.AsyncBaseTransport | None:
    context: _Context = request.app.state.stored_connections
    return context.transport


Reader = Annotated[Principal, Depends(_reader)]
Writer = Annotated[Principal, Depends(_writer)]
AdminDep = Annotated[ConnectionAdmin, Depends(_admin)]
NameParam = Annotated[
    str, PathParam(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Connection name.")
]


def install_connections(
    app: FastAPI,
    engine: AsyncEngine,
    settings: Settings,
    *,
    check: ConnectionCheck | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Add ``/v1/stored-connections…`` and the public ``/oauth/callback`` to ``app``.

    Args:
        app: the API app (its ``state.authenticator`` authenticates callers).
        engine: the audit store's engine (the state tables live in the same database).
        settings: the connections key (``LEDGERFLOW_CONNECTIONS_KEY[_FILE]``), read at first use.
        check: the composition layer's check (``ledgerflow.app.connections_cli.routing_check``);
            None = the shape only.
        transport: httpx transport of the token exchange (tests); None = the network.
    """
    app.state.stored_connections = _Context(engine, settings, check, transport)
    app.include_router(router)
    app.include_router(callback)


def _visible(principal: Principal, summary: dict[str, Any]) -> bool:
    return all(principal.sees(t) for t in summary["tenants"])


def _require_tenants(principal: Principal, tenants: list[str] | None) -> None:
    hidden = [t for t in tenants or [] if not principal.sees(t)]
    if hidden:
        raise Problem(404, "not-found", "Not found", f"no tenant {hidden[0]!r}")


async def _visible_one(admin: ConnectionAdmin, principal: Principal, name: str) -> dict[str, Any]:
    try:
        summary = await admin.show(name)
    except ConfigError as exc:
        raise _problem(exc) from None
    if not _visible(principal, summary):
        raise Problem(404, "not-found", "Not found", f"no stored connection named {name!r}")
    return summary


router = APIRouter(prefix="/v1/stored-connections", tags=["stored connections"])


@router.get("", summary="List stored ERP connections", responses=_problems(400, 401, 403))
async def list_stored(principal: Reader, admin: AdminDep) -> list[StoredConnectionOut]:
    """The stored connections the caller sees (every tenant of each), by name."""
    return [StoredConnectionOut.model_validate(s) for s in await admin.store.summaries() if _visible(principal, s)]


@router.post("", status_code=201, summary="Store an ERP connection", responses=_problems(400, 401, 403, 404, 409))
async def add_stored(
    principal: Writer, admin: AdminDep, body: Annotated[StoredConnectionIn, Body()]
) -> StoredConnectionOut:
    """Store a new, enabled connection; workers started (or reloaded) afterwards route to it."""
    _require_tenants(principal, body.tenants)
    try:
        summary = await admin.add(
            body.name,
            erp=body.erp,
            tenants=body.tenants,
            base_url=body.base_url,
            objects=body.objects,
            credentials=body.credentials,
            options=body.options,
        )
    except ConfigError as exc:
        raise _problem(exc) from None
    return StoredConnectionOut.model_validate(summary)


def _callback_url(request: Request) -> str:
    """``LEDGERFLOW_PUBLIC_URL`` + ``/oauth/callback`` when set, else the callback's URL on the request's own origin.

    Behind a proxy or an Ingress the request's origin is the service's internal address, which the
    vendor cannot redirect a browser to: deployments set the public URL.
    """
    context: _Context = request.app.state.stored_connections
    if context.settings.public_url:
        return context.settings.public_url.rstrip("/") + CALLBACK_PATH
    return str(request.url_for("oauth_callback"))


@router.post(
    "/connect",
    status_code=201,
    summary="Start the OAuth consent of a QuickBooks or Xero connection",
    responses=_problems(400, 401, 403, 404, 409),
)
async def connect(
    principal: Writer, admin: AdminDep, request: Request, body: Annotated[ConnectIn, Body()]
) -> ConsentOut:
    """A consent URL (authorization code + PKCE S256); the callback stores the connection (or re-consents it)."""
    if body.reconnect:
        await _visible_one(admin, principal, body.name)
    _require_tenants(principal, body.tenants)
    redirect_uri = body.redirect_uri or _callback_url(request)
    try:
        context: _Context = request.app.state.stored_connections
        flow = OAuthConnect(
            admin, transport=_transport(request), allow_custom_root=context.settings.oauth_allow_custom_root
        )
        consent = await flow.start(
            body.erp,
            name=body.name,
            tenants=body.tenants,
            client_id=body.client_id,
            client_secret=body.client_secret,
            redirect_uri=redirect_uri,
            base_url=body.base_url,
            objects=body.objects,
            options=body.options,
            oauth_root=body.oauth_root,
            scope=body.scope,
            xero_tenant_id=body.xero_tenant_id,
            requested_by=f"{principal.kind}:{principal.subject}",
            reconnect=body.reconnect,
        )
    except ConfigError as exc:
        raise _problem(exc) from None
    return ConsentOut(
        url=consent.url,
        expires_at=consent.expires_at,
        connection=consent.connection,
        erp=consent.erp,
        redirect_uri=redirect_uri,
    )


@router.get("/{name}", summary="Get a stored ERP connection", responses=_problems(400, 401, 403, 404))
async def show_stored(principal: Reader, admin: AdminDep, name: NameParam) -> StoredConnectionOut:
    """One stored connection (credential names only)."""
    return StoredConnectionOut.model_validate(await _visible_one(admin, principal, name))


@router.patch("/{name}", summary="Change a stored ERP connection", responses=_problems(400, 401, 403, 404, 409))
async def update_stored(
    principal: Writer, admin: AdminDep, name: NameParam, body: Annotated[StoredConnectionPatch, Body()]
) -> StoredConnectionOut:
    """Change a connection: credentials re-encrypted with the first key; tenants must stay visible."""
    await _visible_one(admin, principal, name)
    _require_tenants(principal, body.tenants)
    changes = ConnectionChanges(
        tenants=body.tenants,
        base_url=body.base_url,
        sandbox=body.sandbox,
        objects=body.objects,
        set_credentials=body.credentials,
        drop_credentials=body.drop_credentials,
        set_options=body.options,
        drop_options=body.drop_options,
    )
    try:
        return StoredConnectionOut.model_validate(await admin.update(name, changes))
    except ConfigError as exc:
        raise _problem(exc) from None


async def _set_enabled(principal: Principal, admin: ConnectionAdmin, name: str, enabled: bool) -> Any:
    await _visible_one(admin, principal, name)
    try:
        return StoredConnectionOut.model_validate(await admin.set_enabled(name, enabled))
    except ConfigError as exc:
        raise _problem(exc) from None


@router.post("/{name}/disable", summary="Disable a stored ERP connection", responses=_problems(400, 401, 403, 404))
async def disable_stored(principal: Writer, admin: AdminDep, name: NameParam) -> StoredConnectionOut:
    """Keep the connection but stop routing to it."""
    result: StoredConnectionOut = await _set_enabled(principal, admin, name, False)
    return result


@router.post("/{name}/enable", summary="Enable a stored ERP connection", responses=_problems(400, 401, 403, 404))
async def enable_stored(principal: Writer, admin: AdminDep, name: NameParam) -> StoredConnectionOut:
    """Route to a disabled connection again."""
    result: StoredConnectionOut = await _set_enabled(principal, admin, name, True)
    return result


@router.delete(
    "/{name}", status_code=204, summary="Remove a stored ERP connection", responses=_problems(400, 401, 403, 404)
)
async def remove_stored(principal: Writer, admin: AdminDep, name: NameParam) -> Response:
    """Delete the connection (its binder rows and OAuth tokens stay, under its name)."""
    await _visible_one(admin, principal, name)
    try:
        await admin.remove(name)
    except ConfigError as exc:
        raise _problem(exc) from None
    return Response(status_code=204)


callback = APIRouter(tags=["stored connections"])


@callback.get(
    CALLBACK_PATH,
    name="oauth_callback",
    summary="OAuth 2.0 redirect URI (public: the single-use state is the credential)",
    responses=_problems(400, 409, 502),
)
async def oauth_callback(
    request: Request,
    admin: AdminDep,
    state: Annotated[str, Query(min_length=1, max_length=200, pattern=_TEXT, description="The consent's state.")],
    code: Annotated[str | None, Query(max_length=2000, pattern=_TEXT, description="The authorization code.")] = None,
    realm_id: Annotated[
        str | None, Query(alias="realmId", max_length=100, pattern=_TEXT, description="QuickBooks company id.")
    ] = None,
    error: Annotated[
        str | None, Query(max_length=200, pattern=_TEXT, description="Set when the consent was refused.")
    ] = None,
    error_description: Annotated[
        str | None, Query(max_length=1000, pattern=_TEXT, description="The vendor's explanation.")
    ] = None,
) -> ConnectedOut:
    """Exchange the code (with the PKCE verifier) and store the connection with its tokens, encrypted."""
    try:
        summary = await OAuthConnect(admin, transport=_transport(request)).complete(
            state=state, code=code, realm_id=realm_id, error=error, error_description=error_description
        )
    except ConfigError as exc:
        raise _problem(exc) from None
    return ConnectedOut(status="connected", connection=StoredConnectionOut.model_validate(summary))
