"""Connecting QuickBooks Online and Xero: the OAuth 2.0 authorization-code flow with PKCE (RFC 6749 §4.1, RFC 7636).

:meth:`OAuthConnect.start` (``ledgerflow connections connect``, ``POST /v1/stored-connections/connect``)
makes a ``state`` (unguessable, single use) and a PKCE ``code_verifier`` (``S256`` challenge), keeps
a **pending authorization** in the state store (table ``oauth_authorizations``: the SHA-256 of the
state as key, the connection's fields, and the client credentials, code verifier and endpoints
Fernet-encrypted with the connections key; 10 minutes) and returns the vendor's consent URL.
The vendor sends the browser back to the ``redirect_uri`` with ``code`` and ``state`` (Intuit adds
``realmId``); :meth:`OAuthConnect.complete` (``GET /oauth/callback`` of the audit service, or
``ledgerflow connections complete --url …`` headless) takes the pending authorization out (one
atomic ``DELETE … RETURNING``: a replayed state finds nothing), exchanges the code at the token
endpoint with the verifier (client authentication HTTP Basic, as both vendors document), learns
the Xero organisation from ``GET https://api.xero.com/connections``, and stores the connection:
credentials ``client_id``, ``client_secret``, ``refresh_token``, ``realm_id`` (QuickBooks) or
``tenant_id`` (Xero), and ``token_url`` when not the vendor's, encrypted; the first token pair goes
to ``oauth_tokens`` (encrypted), where the connector's :class:`~ledgerflow.core.outbound.oauth.RefreshTokenManager`
rotates it as for any connection. ``reconnect`` (``connections connect --reconnect``, ``"reconnect": true``)
re-consents a stored connection in place: only its credentials and tokens are replaced, and a
consent for another company / organisation than the stored one is refused (``organisation-mismatch``).

Vendor facts (``shared/reference/erp_apis.md`` §1-2; developer.intuit.com "OAuth 2.0",
developer.xero.com "OAuth 2.0 auth flow"): :data:`PROVIDERS`. ``oauth_root`` rebases the three
endpoints onto another origin keeping their paths: the local sandboxes serve the vendors' paths.
The client secret is sent to that origin, so ``oauth_root`` is refused (:class:`CustomRootError`)
unless the process allows it (``LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT``, on in ``ledgerflow up``).

authlib does the protocol: state and verifier generation (``generate_token``), the ``S256``
challenge and the consent URL (``AsyncOAuth2Client.create_authorization_url``), the code exchange
(``fetch_token``) and the parsing of a callback URL (``parse_authorization_code_response``).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import authlib.deprecate  # noqa: F401 - first: it installs an "always" filter the block below overrides
import httpx
import orjson
from authlib.common.security import generate_token
from sqlalchemy import JSON, DateTime, String, Text, delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ledgerflow.core.connections import (
    ConnectionAdmin,
    ConnectionChanges,
    ConnectionConflict,
    ConnectionNotFound,
    ConnectionStore,
)
from ledgerflow.core.settings import ConfigError
from ledgerflow.core.state import StateBase, StoredToken

with warnings.catch_warnings():
    # authlib announces a move to the httpx2 package on import; httpx is what the project uses.
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

__all__ = [
    "PENDING_TTL",
    "PROVIDERS",
    "Consent",
    "ConsentError",
    "CustomRootError",
    "OAuthConnect",
    "OAuthProvider",
    "PendingAuthorizationRow",
    "TokenExchangeError",
]

PENDING_TTL = timedelta(minutes=10)
"""How long a consent URL stays valid (its pending authorization)."""


class ConsentError(ConfigError):
    """The callback cannot complete: unknown, used or expired state, consent refused, realm missing.

    ``kind`` is a short problem type: ``invalid-state``, ``expired-state``, ``consent-refused``,
    ``invalid-callback``, ``organisation-mismatch`` (a reconnect consented for another QuickBooks
    company or Xero organisation than the stored connection's).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CustomRootError(ConfigError):
    """An ``oauth_root`` was given and this process does not allow one (``LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT``).

    The code exchange sends the app's client secret to the token endpoint: an origin other than
    the vendor's would receive it, so only deployments that talk to sandboxes turn it on.
    """


class TokenExchangeError(ConfigError):
    """The token endpoint refused the code (``error`` is the OAuth error code) or could not be reached.

    ``status`` is 400 for a refusal (wrong verifier, spent code), 502 for an unreachable or
    unanswering vendor.
    """

    def __init__(self, message: str, *, error: str, status: int) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


@dataclass(frozen=True, slots=True)
class OAuthProvider:
    """One vendor's authorization-code endpoints and scopes.

    Attributes:
        erp: ERP kind.
        authorize_url: the consent page.
        token_url: the token endpoint (code exchange and refresh).
        scope: scopes asked for, space-separated.
        realm_param: callback parameter naming the company (Intuit ``realmId``), or None.
        connections_url: where the tenants the token may use are listed (Xero), or None.
        tenant_credential: credential key of the company / organisation id.
    """

    erp: str
    authorize_url: str
    token_url: str
    scope: str
    realm_param: str | None
    connections_url: str | None
    tenant_credential: str

    def at(self, root: str) -> OAuthProvider:
        """The same endpoints on origin ``root`` (``http://127.0.0.1:8123``), paths kept: a sandbox."""
        base = urlsplit(root)

        def moved(url: str | None) -> str | None:
            if url is None:
                return None
            parts = urlsplit(url)
            return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))

        return replace(
            self,
            authorize_url=moved(self.authorize_url) or "",
            token_url=moved(self.token_url) or "",
            connections_url=moved(self.connections_url),
        )


PROVIDERS: dict[str, OAuthProvider] = {
    "quickbooks": OAuthProvider(
        "quickbooks",
        authorize_url="https://appcenter.intuit.com/connect/oauth2",
        token_url="https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",  # noqa: S106 - an URL
        scope="com.intuit.quickbooks.accounting",
        realm_param="realmId",
        connections_url=None,
        tenant_credential="realm_id",
    ),
    "xero": OAuthProvider(
        "xero",
        authorize_url="https://login.xero.com/identity/connect/authorize",
        token_url="https://identity.xero.com/connect/token",  # noqa: S106 - an URL
        # offline_access: a refresh token; the others: bills, invoices, payments, contacts, accounts.
        scope="offline_access accounting.transactions accounting.contacts accounting.settings",
        realm_param=None,
        connections_url="https://api.xero.com/connections",
        tenant_credential="tenant_id",
    ),
}
"""ERP kinds connected with the authorization-code flow, and their vendors' endpoints."""


class PendingAuthorizationRow(StateBase):
    """A consent URL handed out and not yet called back (``state`` stored as its SHA-256 only)."""

    __tablename__ = "oauth_authorizations"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection: Mapped[str] = mapped_column(String(100))
    erp: Mapped[str] = mapped_column(String(50))
    tenants: Mapped[list[str]] = mapped_column(JSON)
    base_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    objects: Mapped[list[str]] = mapped_column(JSON)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets: Mapped[str] = mapped_column(Text)
    """Fernet token of the JSON: client_id, client_secret, code_verifier, redirect_uri, endpoints, scope."""
    requested_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class Consent:
    """A started authorization: the URL to open, its ``state`` and when it expires."""

    url: str
    state: str
    expires_at: datetime
    connection: str
    erp: str


def _http_url(value: str, what: str) -> str:
    """``value`` if it is an absolute http(s) URL without a fragment.

    Raises:
        ConfigError: naming ``what``.
    """
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ConfigError(f"{what} must be an absolute http(s) URL without a fragment")
    return value


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class OAuthConnect:
    """Starts and completes authorization-code connections over a :class:`ConnectionAdmin`.

    Args:
        admin: the connection operations (validation, the composition layer's check, the store).
        transport: an httpx transport for the token and connections requests (tests); None = the network.
        timeout: seconds for each request to the vendor.
        allow_custom_root: whether :meth:`start` accepts an ``oauth_root`` (the setting
            ``oauth_allow_custom_root``; default refused).
    """

    def __init__(
        self,
        admin: ConnectionAdmin,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        allow_custom_root: bool = False,
    ) -> None:
        self.admin = admin
        self.allow_custom_root = allow_custom_root
        self.store: ConnectionStore = admin.store
        self._session = async_sessionmaker(self.store.state.engine, expire_on_commit=False)
        self._transport = transport
        self._timeout = timeout

    async def create_table(self) -> None:
        """Create the state tables if missing, ``oauth_authorizations`` included (idempotent)."""
        await self.store.state.create_all()

    def _client(self, client_id: str, client_secret: str, redirect_uri: str, scope: str) -> AsyncOAuth2Client:
        kwargs: dict[str, Any] = {"timeout": self._timeout}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        return AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - Intuit and Xero: HTTP Basic
            scope=scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            **kwargs,
        )

    async def start(
        self,
        erp: str,
        *,
        name: str,
        tenants: list[str] | None,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        base_url: str | None = None,
        objects: list[str] | None = None,
        options: dict[str, Any] | None = None,
        oauth_root: str | None = None,
        scope: str | None = None,
        xero_tenant_id: str | None = None,
        requested_by: str | None = None,
        reconnect: bool = False,
    ) -> Consent:
        """Keep a pending authorization and return the consent URL.

        Args:
            erp: ``quickbooks`` or ``xero`` (:data:`PROVIDERS`).
            name: the connection to store once consented (``reconnect``: the stored one to re-consent).
            tenants: its tenants (``reconnect``: None, or the stored ones).
            base_url: its API base URL (None: the local sandbox of ``ledgerflow up``).
            objects: its object types (default ``bill``).
            options: its connector options.
            client_id: the app's OAuth client id (from the developer portal).
            client_secret: the app's OAuth client secret.
            redirect_uri: registered with the app; where the vendor sends the browser back
                (the audit service's ``/oauth/callback``).
            oauth_root: origin serving the vendor's authorize/token/connections paths (a sandbox);
                None = the vendor's. Refused unless ``allow_custom_root``.
            scope: scopes to ask for (default: the provider's).
            xero_tenant_id: the organisation to use when the consent grants several (Xero).
            requested_by: who asked (kept with the pending authorization).
            reconnect: re-consent stored connection ``name`` in place: the callback replaces its
                credentials and tokens only (tenants, base URL, objects and options kept; giving
                other ones is refused), and is refused (``organisation-mismatch``) when the consent
                is for another company / organisation than the stored ``realm_id`` / ``tenant_id``
                (for Xero, the stored organisation is the one asked for when several are granted).

        Raises:
            ConfigError: unknown ERP for this flow, invalid connection fields, no key configured
                (the secrets are stored encrypted); ConnectionConflict: the name is taken;
                CustomRootError: ``oauth_root`` given and not allowed; ConnectionNotFound:
                ``reconnect`` and no stored connection ``name``.
        """
        provider = PROVIDERS.get(erp)
        if provider is None:
            raise ConfigError(f"ERP {erp!r} has no authorization-code connect flow (known: {', '.join(PROVIDERS)})")
        if oauth_root and not self.allow_custom_root:
            raise CustomRootError(
                f"oauth_root is refused: the client secret would be sent to {oauth_root!r} instead of {erp}'s "
                "token endpoint; set LEDGERFLOW_OAUTH_ALLOW_CUSTOM_ROOT=true on this service to connect to a sandbox"
            )
        if oauth_root:
            provider = provider.at(_http_url(oauth_root, "oauth_root"))
        _http_url(redirect_uri, "redirect_uri")
        if base_url:
            _http_url(base_url, "base_url")
        if not client_id or not client_secret:
            raise ConfigError(f"connection {name!r}: client_id and client_secret are required")
        expected_tenant = ""
        if reconnect:
            current = await self.store.get(name)
            if current is None:
                raise ConnectionNotFound(f"no stored connection named {name!r} to reconnect")
            if current.config.erp != erp:
                raise ConfigError(f"connection {name!r} is a {current.config.erp} connection, not {erp}")
            if (tenants and set(tenants) != set(current.tenants)) or base_url or objects or options:
                raise ConfigError(
                    f"reconnect replaces the credentials and tokens of connection {name!r} only: its tenants, "
                    "base URL, objects and options are kept (change them with update)"
                )
            tenants, base_url = list(current.tenants), current.config.base_url
            objects, options = list(current.config.objects), dict(current.config.options)
            stored = current.config.credentials.get(provider.tenant_credential)
            expected_tenant = stored.get_secret_value() if stored else ""
            xero_tenant_id = xero_tenant_id or (expected_tenant if provider.connections_url else None)
        self.admin.validated(
            name,
            erp=erp,
            tenants=tenants or [],
            base_url=base_url,
            objects=objects or ["bill"],
            credentials={"client_id": client_id, "client_secret": client_secret},
            options=options or {},
        )
        if not reconnect and await self.store.summaries(name):
            raise ConnectionConflict(
                f"a stored connection named {name!r} exists (reconnect it, remove it, or choose another name)"
            )
        if not self.store.cipher.configured:
            raise ConfigError(
                "connecting stores client credentials and tokens encrypted: set LEDGERFLOW_CONNECTIONS_KEY "
                "or LEDGERFLOW_CONNECTIONS_KEY_FILE (a Fernet key, e.g. from a mounted Secret)"
            )
        scope = scope or provider.scope
        state, verifier = generate_token(43), generate_token(64)
        async with self._client(client_id, client_secret, redirect_uri, scope) as client:
            url, _ = client.create_authorization_url(provider.authorize_url, state=state, code_verifier=verifier)
        secrets_json = {
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "token_url": provider.token_url,
            "default_token_url": PROVIDERS[erp].token_url,
            "connections_url": provider.connections_url or "",
            "xero_tenant_id": xero_tenant_id or "",
            "reconnect": "1" if reconnect else "",
            "expected_tenant": expected_tenant,
        }
        now = datetime.now(UTC)
        row = PendingAuthorizationRow(
            state_hash=_state_hash(state),
            connection=name,
            erp=erp,
            tenants=list(dict.fromkeys(tenants or [])),
            base_url=base_url,
            objects=list(objects or ["bill"]),
            options=dict(options or {}),
            secrets=self.store.cipher.seal(name, orjson.dumps(secrets_json).decode()),
            requested_by=requested_by,
            created_at=now,
            expires_at=now + PENDING_TTL,
        )
        await self.create_table()
        async with self._session.begin() as session:
            # Expired pending authorizations are dropped as new ones are made.
            await session.execute(delete(PendingAuthorizationRow).where(PendingAuthorizationRow.expires_at < now))
            session.add(row)
        return Consent(str(url), state, row.expires_at, name, erp)

    async def complete_url(self, callback_url: str) -> dict[str, Any]:
        """:meth:`complete` with the parameters of the URL the vendor redirected to (headless use).

        Raises:
            ConsentError, TokenExchangeError, ConfigError: as :meth:`complete`.
        """
        query = dict(parse_qsl(urlsplit(callback_url).query, keep_blank_values=True))
        if not query.get("state"):
            raise ConsentError("invalid-callback", "the URL has no state parameter (paste the whole callback URL)")
        return await self.complete(
            state=query["state"],
            code=query.get("code"),
            realm_id=query.get("realmId"),
            error=query.get("error"),
            error_description=query.get("error_description"),
        )

    async def _take(self, state: str) -> PendingAuthorizationRow:
        """Remove and return the pending authorization of ``state`` (atomic: a replay finds nothing)."""
        await self.create_table()
        async with self._session.begin() as session:
            row = (
                await session.scalars(
                    delete(PendingAuthorizationRow)
                    .where(PendingAuthorizationRow.state_hash == _state_hash(state))
                    .returning(PendingAuthorizationRow)
                )
            ).one_or_none()
        if row is None:
            raise ConsentError(
                "invalid-state", "unknown or already used state: start again (ledgerflow connections connect)"
            )
        if _utc(row.expires_at) < datetime.now(UTC):
            raise ConsentError(
                "expired-state",
                f"the authorization of connection {row.connection!r} expired at {_utc(row.expires_at).isoformat()} "
                f"(consent URLs are valid {int(PENDING_TTL.total_seconds() // 60)} minutes): start again",
            )
        return row

    async def complete(
        self,
        *,
        state: str,
        code: str | None,
        realm_id: str | None = None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> dict[str, Any]:
        """Exchange the code of the callback and store the connection; its summary (no secret).

        Args:
            state: the callback's ``state``.
            code: the callback's ``code``.
            realm_id: Intuit's ``realmId`` (the company).
            error: the callback's ``error`` (consent refused).
            error_description: the callback's ``error_description``.

        Raises:
            ConsentError: unknown, used or expired state; consent refused; no code or realm.
            TokenExchangeError: the token endpoint refused the code (wrong verifier, spent code)
                or could not be reached.
            ConfigError: the stored fields no longer validate; ConnectionConflict: the name was
                taken meanwhile.
        """
        row = await self._take(state)
        name = row.connection
        if error:
            detail = f": {error_description}" if error_description else ""
            raise ConsentError("consent-refused", f"the consent for connection {name!r} was refused ({error}{detail})")
        if not code:
            raise ConsentError("invalid-callback", "the callback has no code")
        provider = PROVIDERS[row.erp]
        if provider.realm_param and not realm_id:
            raise ConsentError("invalid-callback", f"the callback has no {provider.realm_param}")
        secret: dict[str, str] = orjson.loads(self.store.cipher.unseal(name, row.secrets))
        async with self._client(
            secret["client_id"], secret["client_secret"], secret["redirect_uri"], secret["scope"]
        ) as client:
            token = await self._exchange(client, secret, code, row.erp)
            tenant = realm_id if provider.realm_param else await self._xero_tenant(client, secret, name)
        refresh_token = token.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise TokenExchangeError(
                f"{row.erp} answered no refresh token (was offline_access granted?)",
                error="no_refresh_token",
                status=502,
            )
        credentials = {
            "client_id": secret["client_id"],
            "client_secret": secret["client_secret"],
            "refresh_token": refresh_token,
            provider.tenant_credential: str(tenant),
        }
        if secret["token_url"] != secret["default_token_url"]:
            credentials["token_url"] = secret["token_url"]
        if secret.get("reconnect"):
            summary = await self._reconnect(name, row.erp, str(tenant), secret, credentials)
        else:
            summary = await self.admin.add(
                name,
                erp=row.erp,
                tenants=row.tenants,
                base_url=row.base_url,
                objects=row.objects,
                credentials=credentials,
                options=row.options,
            )
        expires_in = int(token.get("expires_in") or 3600)
        await self.store.state.put_token(
            name,
            StoredToken(str(token["access_token"]), refresh_token, datetime.now(UTC) + timedelta(seconds=expires_in)),
        )
        return summary

    async def _reconnect(
        self, name: str, erp: str, tenant: str, secret: dict[str, str], credentials: dict[str, str]
    ) -> dict[str, Any]:
        """Replace the credentials of stored connection ``name`` after a re-consent; its summary.

        Raises:
            ConsentError: ``organisation-mismatch``, the consent is for another company / organisation.
            ConnectionNotFound: the connection was removed meanwhile.
        """
        expected = secret.get("expected_tenant")
        if expected and tenant != expected:
            what = "QuickBooks company (realmId)" if erp == "quickbooks" else "Xero organisation (tenantId)"
            raise ConsentError(
                "organisation-mismatch",
                f"the consent is for {what} {tenant!r}, connection {name!r} is connected to {expected!r}: "
                "reconnect refused, nothing changed (consent with the same one, or connect a new connection)",
            )
        drop = () if "token_url" in credentials else ("token_url",)
        return await self.admin.update(name, ConnectionChanges(set_credentials=credentials, drop_credentials=drop))

    async def _exchange(self, client: AsyncOAuth2Client, secret: dict[str, str], code: str, erp: str) -> dict[str, Any]:
        try:
            token = await client.fetch_token(
                secret["token_url"], grant_type="authorization_code", code=code, code_verifier=secret["code_verifier"]
            )
        except OAuthError as exc:
            raise TokenExchangeError(
                f"{erp} refused the authorization code ({exc.error}): start again", error=str(exc.error), status=400
            ) from None
        except (httpx.HTTPError, ValueError) as exc:
            raise TokenExchangeError(
                f"{erp} token endpoint failed ({type(exc).__name__}): start again", error="unavailable", status=502
            ) from None
        if not isinstance(token.get("access_token"), str):
            raise TokenExchangeError(f"{erp} answered no access token", error="invalid_response", status=502)
        return dict(token)

    async def _xero_tenant(self, client: AsyncOAuth2Client, secret: dict[str, str], name: str) -> str:
        """The organisation the token may use (``GET /connections``): the one asked for, or the only one."""
        try:
            # The client holds the token fetch_token answered: authlib sends it as a bearer token.
            response = await client.get(secret["connections_url"], headers={"Accept": "application/json"})
            tenants = response.json() if response.is_success else None
        except (httpx.HTTPError, ValueError) as exc:
            raise TokenExchangeError(
                f"xero connections endpoint failed ({type(exc).__name__})", error="unavailable", status=502
            ) from None
        if not isinstance(tenants, list):
            raise TokenExchangeError(
                f"xero connections endpoint answered {response.status_code}", error="invalid_response", status=502
            )
        organisations = [t for t in tenants if isinstance(t, dict) and t.get("tenantType") == "ORGANISATION"]
        wanted = secret.get("xero_tenant_id")
        if wanted:
            if any(t.get("tenantId") == wanted for t in organisations):
                return wanted
            if secret.get("reconnect") and wanted == secret.get("expected_tenant"):
                granted = ", ".join(repr(t.get("tenantId")) for t in organisations) or "none"
                raise ConsentError(
                    "organisation-mismatch",
                    f"the consent is for Xero organisation (tenantId) {granted}, connection {name!r} is connected "
                    f"to {wanted!r}: reconnect refused, nothing changed (consent with the same one, or connect a "
                    "new connection)",
                )
            raise ConsentError("invalid-callback", f"the consent did not grant organisation {wanted!r}")
        if len(organisations) != 1:
            names = ", ".join(f"{t.get('tenantName')} ({t.get('tenantId')})" for t in organisations) or "none"
            raise ConsentError(
                "invalid-callback",
                f"the consent granted {len(organisations)} organisations ({names}): start again with --xero-tenant-id",
            )
        return str(organisations[0]["tenantId"])
