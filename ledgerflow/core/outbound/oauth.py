"""OAuth 2.0 token managers for ERP connections, persisted in the :class:`~ledgerflow.core.state.StateStore`.

Two grants (RFC 6749):

* :class:`RefreshTokenManager` — authorization code with **refresh-token rotation**
  (QuickBooks Online, Xero): every refresh answers a new refresh token; the new pair is
  persisted (``StateStore.put_token``) *before* the access token is used, so a crash never
  loses the only valid refresh token. The refresh token configured in
  ``credentials.refresh_token`` seeds the first refresh; afterwards the persisted one wins
  (and the configured one is tried again only if the persisted one is rejected, e.g. after
  an operator re-consented and put a new token in the config).
* :class:`ClientCredentialsManager` — client credentials (Coupa, NetSuite OAuth 2.0 M2M,
  Xero Custom Connections).

Both refresh ``refresh_margin`` seconds ahead of expiry, hold an ``asyncio.Lock`` so that
concurrent requests refresh once, re-read the store inside the lock (another replica may have
rotated already), and implement :class:`ledgerflow.core.outbound.client.RequestAuth` (``apply`` sets
``Authorization: Bearer …``; ``invalidate`` forgets an access token the ERP rejected).

Token endpoint client authentication is HTTP Basic by default (Intuit and Xero both document
``Authorization: Basic base64(client_id:client_secret)``); ``client_auth="body"`` sends
``client_id``/``client_secret`` as form fields instead. Subclasses add form fields to every
token request (e.g. a JWT ``client_assertion``) by overriding :meth:`OAuthTokenManager.grant_fields`.

Errors: a rejected refresh token → ``PermanentError(ErrorCode.AUTH_REFRESH_REJECTED)``; rejected
client credentials → ``PermanentError(ErrorCode.AUTH_REJECTED)``; token endpoint 429/5xx/timeouts →
``RetriableError``. Messages carry the OAuth ``error`` code, never a secret.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.metrics import ERP_REQUEST_DURATION, ERP_REQUESTS
from ledgerflow.core.outbound.client import parse_retry_after
from ledgerflow.core.outbound.errors import PermanentError, RetriableError
from ledgerflow.core.settings import ConfigError, ConnectionConfig
from ledgerflow.core.state import StateStore, StoredToken

__all__ = ["ClientCredentialsManager", "OAuthTokenManager", "RefreshTokenManager", "TokenRejected"]

_DEFAULT_EXPIRES_IN = 3600


class TokenRejected(Exception):  # noqa: N818 - the token endpoint's verdict
    """The token endpoint refused the grant (HTTP 400/401); ``error`` is the OAuth error code."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def _secret(config: ConnectionConfig, key: str) -> str | None:
    value = config.credentials.get(key)
    return value.get_secret_value() if value is not None else None


class OAuthTokenManager(ABC):
    """Access-token cache for one connection, persisted in the state store.

    Args:
        http: the shared ``httpx.AsyncClient``.
        state: state store holding the ``oauth_tokens`` row of ``connection``.
        connection: connection name (state key, metrics label).
        erp: ERP kind (metrics label).
        token_url: the token endpoint.
        client_id: OAuth client id.
        client_secret: OAuth client secret.
        scope: ``scope`` form field, if the grant needs one.
        client_auth: ``"basic"`` (Authorization header) or ``"body"`` (form fields).
        refresh_margin: seconds before expiry at which a token counts as expired.
        timeout: token request timeout in seconds (None = the shared client's).

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        state: StateStore,
        connection: str,
        *,
        erp: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        client_auth: Literal["basic", "body"] = "basic",
        refresh_margin: float = 300.0,
        timeout: float | None = None,
    ) -> None:
        self.http = http
        self.state = state
        self.connection = connection
        self.erp = erp
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.client_auth = client_auth
        self.refresh_margin = refresh_margin
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._cached: StoredToken | None = None
        self._rejected: str | None = None
        self.refreshes = 0
        """Number of successful token requests made by this manager (diagnostics, tests)."""

    def _fresh(self, token: StoredToken | None) -> bool:
        if token is None or token.access_token == self._rejected:
            return False
        return token.expires_at - timedelta(seconds=self.refresh_margin) > datetime.now(UTC)

    async def access_token(self) -> str:
        """A valid access token, refreshing (once, under the lock) and persisting when needed.

        Raises:
            PermanentError: ``auth.refresh_rejected`` / ``auth.rejected`` / ``auth.config`` (also:
                the persisted tokens are encrypted and no configured key decrypts them).
            RetriableError: the token endpoint is unavailable, throttling or timing out.

        """
        cached = self._cached
        if cached is not None and self._fresh(cached):
            return cached.access_token
        async with self._lock:
            if self._cached is not None and self._fresh(self._cached):
                return self._cached.access_token
            try:
                stored = await self.state.get_token(self.connection)
            except ConfigError as exc:  # encrypted tokens, and no (or the wrong) key
                raise PermanentError(ErrorCode.AUTH_CONFIG, str(exc)) from exc
            if stored is not None and self._fresh(stored):
                self._cached = stored
                return stored.access_token
            token = await self.obtain(stored)
            await self.state.put_token(self.connection, token)
            self._cached = token
            self.refreshes += 1
            return token.access_token

    async def apply(self, request: httpx.Request) -> None:
        """Set ``Authorization: Bearer <access token>`` on ``request``."""
        request.headers["Authorization"] = f"Bearer {await self.access_token()}"

    async def invalidate(self) -> None:
        """Forget the current access token (the ERP answered 401); the next use refreshes."""
        async with self._lock:
            if self._cached is not None:
                self._rejected = self._cached.access_token
            self._cached = None

    @abstractmethod
    async def obtain(self, stored: StoredToken | None) -> StoredToken:
        """Run the grant and return the new token pair (not yet persisted).

        Args:
            stored: what the state store holds now (expired or rejected), or None.

        """

    def grant_fields(self) -> dict[str, str]:
        """Extra form fields of every token request (subclasses: e.g. a JWT ``client_assertion``)."""
        return {}

    async def token_request(self, form: dict[str, str], *, rejected_code: ErrorCode) -> dict[str, Any]:
        """POST ``form`` to the token endpoint and return the JSON answer.

        Raises:
            TokenRejected: HTTP 400 or 401 (invalid grant or client).
            RetriableError: 429, 5xx, timeout or connection failure.
            PermanentError: another status or a body without ``access_token`` (``rejected_code``).

        """
        form = {**form, **self.grant_fields()}
        if self.scope:
            form.setdefault("scope", self.scope)
        auth: httpx.BasicAuth | None = None
        if self.client_auth == "basic":
            auth = httpx.BasicAuth(self.client_id, self._client_secret)
        else:
            form = {**form, "client_id": self.client_id, "client_secret": self._client_secret}
        started = time.perf_counter()
        try:
            response = await self.http.post(
                self.token_url,
                data=form,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
                timeout=self.timeout if self.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            self._observe("error", started)
            raise RetriableError(ErrorCode.HTTP_TIMEOUT, f"{self.erp} token endpoint timed out") from exc
        except httpx.TransportError as exc:
            self._observe("error", started)
            raise RetriableError(ErrorCode.HTTP_TRANSPORT, f"{self.erp} token endpoint: {type(exc).__name__}") from exc
        status = response.status_code
        self._observe("429" if status == 429 else f"{status // 100}xx", started)
        if status == 429 or status >= 500 or status == 408:
            raise RetriableError(
                ErrorCode.HTTP_429 if status == 429 else ErrorCode.HTTP_5XX,
                f"{self.erp} token endpoint answered {status}",
                http_status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if status in (400, 401):
            error = body.get("error") if isinstance(body, dict) else None
            raise TokenRejected(str(error or f"HTTP {status}"), status)
        if not response.is_success or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise PermanentError(
                rejected_code,
                f"{self.erp} token endpoint answered {status} without an access token",
                http_status=status,
            )
        return body

    def _observe(self, status: str, started: float) -> None:
        ERP_REQUESTS.labels(self.erp, self.connection, "oauth.token", status).inc()
        ERP_REQUEST_DURATION.labels(self.erp, self.connection, "oauth.token").observe(time.perf_counter() - started)

    @staticmethod
    def _token_from(body: dict[str, Any], refresh_token: str | None) -> StoredToken:
        try:
            expires_in = int(body.get("expires_in", _DEFAULT_EXPIRES_IN))
        except (TypeError, ValueError):
            expires_in = _DEFAULT_EXPIRES_IN
        new_refresh = body.get("refresh_token")
        return StoredToken(
            access_token=body["access_token"],
            refresh_token=new_refresh if isinstance(new_refresh, str) and new_refresh else refresh_token,
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        )


class RefreshTokenManager(OAuthTokenManager):
    """Authorization-code grant with refresh-token rotation (QuickBooks Online, Xero).

    Args:
        initial_refresh_token: the refresh token from the connection's credentials (used when the
            store has none, or when the stored one is rejected and differs from it).
        **kwargs: see :class:`OAuthTokenManager`.

    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        state: StateStore,
        connection: str,
        *,
        initial_refresh_token: str | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(http, state, connection, **kwargs)
        self._initial_refresh_token = initial_refresh_token

    @classmethod
    def from_config(
        cls,
        http: httpx.AsyncClient,
        state: StateStore,
        connection: str,
        config: ConnectionConfig,
        *,
        erp: str,
        default_token_url: str,
    ) -> RefreshTokenManager:
        """Build from ``config.credentials`` (``client_id``, ``client_secret``, ``refresh_token``, ``token_url``).

        ``token_url`` may also come from ``config.options["token_url"]``; ``refresh_margin_seconds``
        and ``timeout_seconds`` from options.

        Raises:
            PermanentError: ``auth.config`` when ``client_id`` or ``client_secret`` is missing.

        """
        client_id, client_secret = _secret(config, "client_id"), _secret(config, "client_secret")
        if not client_id or not client_secret:
            raise PermanentError(
                ErrorCode.AUTH_CONFIG, f"connection {connection!r}: credentials need client_id and client_secret"
            )
        opts = config.options
        return cls(
            http,
            state,
            connection,
            initial_refresh_token=_secret(config, "refresh_token"),
            erp=erp,
            token_url=_secret(config, "token_url") or opts.get("token_url") or default_token_url,
            client_id=client_id,
            client_secret=client_secret,
            refresh_margin=float(opts.get("refresh_margin_seconds", 300.0)),
            timeout=float(opts["timeout_seconds"]) if opts.get("timeout_seconds") is not None else None,
        )

    async def obtain(self, stored: StoredToken | None) -> StoredToken:
        """Refresh with the persisted refresh token (then the configured one); return the rotated pair.

        Raises:
            PermanentError: ``auth.refresh_rejected`` when every candidate refresh token is refused,
                ``auth.config`` when there is none at all.
            RetriableError: the token endpoint is unavailable.

        """
        candidates: list[str] = []
        if stored is not None and stored.refresh_token:
            candidates.append(stored.refresh_token)
        if self._initial_refresh_token and self._initial_refresh_token not in candidates:
            candidates.append(self._initial_refresh_token)
        if not candidates:
            raise PermanentError(
                ErrorCode.AUTH_CONFIG, f"connection {self.connection!r}: no refresh_token to start from"
            )
        last: TokenRejected | None = None
        for refresh_token in candidates:
            try:
                body = await self.token_request(
                    {"grant_type": "refresh_token", "refresh_token": refresh_token},
                    rejected_code=ErrorCode.AUTH_REFRESH_REJECTED,
                )
            except TokenRejected as exc:
                last = exc
                continue
            return self._token_from(body, refresh_token)
        assert last is not None
        raise PermanentError(
            ErrorCode.AUTH_REFRESH_REJECTED,
            f"{self.erp} rejected the refresh token of connection {self.connection!r} ({last.error}); "
            "re-authorise the app and put the new refresh_token in the connection's credentials",
            http_status=last.status,
        )


class ClientCredentialsManager(OAuthTokenManager):
    """Client-credentials grant (Coupa, NetSuite OAuth 2.0 M2M, Xero Custom Connections)."""

    @classmethod
    def from_config(
        cls,
        http: httpx.AsyncClient,
        state: StateStore,
        connection: str,
        config: ConnectionConfig,
        *,
        erp: str,
        default_token_url: str | None = None,
        client_auth: Literal["basic", "body"] = "basic",
    ) -> ClientCredentialsManager:
        """Build from ``config.credentials`` (``client_id``, ``client_secret``, ``token_url``, ``scope``).

        ``token_url`` / ``scope`` may also come from ``config.options``.

        Raises:
            PermanentError: ``auth.config`` when client id, secret or token URL is missing.

        """
        client_id, client_secret = _secret(config, "client_id"), _secret(config, "client_secret")
        opts = config.options
        token_url = _secret(config, "token_url") or opts.get("token_url") or default_token_url
        if not client_id or not client_secret or not token_url:
            raise PermanentError(
                ErrorCode.AUTH_CONFIG,
                f"connection {connection!r}: credentials need client_id, client_secret and token_url",
            )
        return cls(
            http,
            state,
            connection,
            erp=erp,
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            scope=_secret(config, "scope") or opts.get("scope"),
            client_auth=opts.get("client_auth", client_auth),
            refresh_margin=float(opts.get("refresh_margin_seconds", 300.0)),
            timeout=float(opts["timeout_seconds"]) if opts.get("timeout_seconds") is not None else None,
        )

    async def obtain(self, stored: StoredToken | None) -> StoredToken:
        """Request a new access token with the client credentials.

        Raises:
            PermanentError: ``auth.rejected`` when the client credentials are refused.
            RetriableError: the token endpoint is unavailable.

        """
        try:
            body = await self.token_request({"grant_type": "client_credentials"}, rejected_code=ErrorCode.AUTH_REJECTED)
        except TokenRejected as exc:
            raise PermanentError(
                ErrorCode.AUTH_REJECTED,
                f"{self.erp} rejected the client credentials of connection {self.connection!r} ({exc.error})",
                http_status=exc.status,
            ) from exc
        return self._token_from(body, None)
