"""Who may use the sync-records API and console: API keys and OIDC bearer tokens, scopes and tenants.

**Principals.** Every request carries ``Authorization: Bearer <credential>`` (the console keeps the
credential in an HttpOnly cookie instead). A credential is either

* an **API key** ``lfk_<key id>_<secret>`` made by ``ledgerflow keys create`` (or printed once by
  ``ledgerflow up``). Only the Argon2id hash of the secret is stored (``api_keys`` table,
  ``argon2-cffi`` with its RFC 9106 defaults); the key id finds the row, so one hash is checked
  per request, and a secret already verified against that row's hash is remembered in memory
  (as a SHA-256 digest) so Argon2 runs once per key and process, not once per request.
  A revoked key stops working at the next request (the row is read every time);
* an **OIDC access token** (a JWT) from the identity provider configured by
  ``LEDGERFLOW_AUDIT_OIDC_ISSUER``, ``…_AUDIENCE`` and ``…_JWKS_URL``, verified with PyJWT against
  the provider's JWKS (signature with an asymmetric algorithm only, ``exp``, ``iss``, ``aud``).
  Its scopes come from the ``scope`` claim (space-separated, or ``scp`` as a list) and its tenants
  from the ``ledgerflow_tenants`` claim (names of both claims are settings).

**Scopes.** ``read`` (list and read records, dead letters, connections), ``redrive`` (re-drive
records, replay dead letters; implies ``read``), ``admin`` (manage keys; implies both).

**Tenants.** Each principal sees a set of tenants, or every tenant (``*``). Anything of another
tenant answers 404, exactly as if it did not exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import jwt
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from ledgerflow.audit.tables import ApiKeyRow
from ledgerflow.core import metrics
from ledgerflow.core.problems import Problem

__all__ = [
    "ALL_TENANTS",
    "KEY_PREFIX",
    "LOCAL_ADMIN_KEY_NAME",
    "SCOPES",
    "Authenticator",
    "KeyStore",
    "NewKey",
    "OidcConfig",
    "OidcVerifier",
    "Principal",
    "expand_scopes",
]

SCOPES = ("read", "redrive", "admin")
"""Scopes a key or token may carry, weakest first; each implies the ones before it."""
ALL_TENANTS = "*"
"""The tenant entry that means "every tenant"."""
KEY_PREFIX = "lfk"
"""First part of every API key: ``lfk_<16 hex key id>_<secret>``."""

LOCAL_ADMIN_KEY_NAME = "local admin (ledgerflow up)"
"""Name of the admin key ``ledgerflow up`` makes at each start (revoking the previous one)."""

_KEY_RE = re.compile(r"^lfk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,200})$")
_TOUCH_EVERY = timedelta(minutes=1)
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


def expand_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes ``scopes`` grant, implied ones included (``admin`` → all three); unknown ones dropped."""
    granted: set[str] = set()
    for scope in scopes:
        if scope in SCOPES:
            granted.update(SCOPES[: SCOPES.index(scope) + 1])
    return frozenset(granted)


def forbidden(detail: str) -> Problem:
    """A 403 problem (a scope or the console's CSRF token is missing); counted as refused."""
    metrics.AUDIT_REFUSED.labels("403").inc()
    return Problem(403, "forbidden", "Forbidden", detail)


def unauthorized(detail: str) -> Problem:
    """A 401 problem with the ``WWW-Authenticate: Bearer`` challenge (RFC 6750); counted as refused."""
    metrics.AUDIT_REFUSED.labels("401").inc()
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="ledgerflow"'}
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        subject: key id (``api-key``) or the token's ``sub`` (``oidc``).
        name: the key's name or the token's subject, for display.
        kind: ``api-key`` or ``oidc``.
        scopes: granted scopes, implied ones included.
        tenants: tenants it may see; None = every tenant.
    """

    subject: str
    name: str
    kind: str
    scopes: frozenset[str]
    tenants: frozenset[str] | None

    def can(self, scope: str) -> bool:
        """Whether this principal holds ``scope``."""
        return scope in self.scopes

    def sees(self, tenant: str | None) -> bool:
        """Whether this principal may see ``tenant`` (a tenant-less item only with every tenant)."""
        if self.tenants is None:
            return True
        return tenant is not None and tenant in self.tenants

    def tenant_list(self) -> list[str] | None:
        """The tenants as a sorted list (for queries), or None for every tenant."""
        return None if self.tenants is None else sorted(self.tenants)


def _tenants(values: Sequence[str]) -> frozenset[str] | None:
    return None if ALL_TENANTS in values else frozenset(values)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: its row and the full key, which is shown once and never stored."""

    row: ApiKeyRow
    key: str


class KeyStore:
    """API keys in the ``api_keys`` table of the audit database.

    Args:
        engine: the audit store's engine (:attr:`ledgerflow.audit.store.AuditStore.engine`).
        hasher: Argon2 hasher (tests may pass cheaper parameters).
    """

    def __init__(self, engine: AsyncEngine, hasher: PasswordHasher | None = None) -> None:
        self._session = async_sessionmaker(engine, expire_on_commit=False)
        self._hasher = hasher or PasswordHasher()
        self._verified: dict[str, bytes] = {}
        self._slots: anyio.CapacityLimiter | None = None

    def _hash_slots(self) -> anyio.CapacityLimiter:
        """At most two Argon2 computations at once (each takes ~64 MiB and a core for a moment).

        A flood of wrong secrets for a known key id then queues instead of exhausting memory.
        """
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(2)
        return self._slots

    async def create(self, name: str, scopes: Sequence[str], tenants: Sequence[str]) -> NewKey:
        """Create a key named ``name`` with ``scopes`` and ``tenants`` (``["*"]`` = every tenant).

        Raises:
            ValueError: an unknown scope, no scope, no tenant, or an empty name.
        """
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise ValueError(f"scopes must be among {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})")
        if not tenants or any(not t.strip() for t in tenants):
            raise ValueError("a key needs at least one tenant, or * for every tenant")
        if not name.strip():
            raise ValueError("a key needs a name")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        secret_hash = await anyio.to_thread.run_sync(self._hasher.hash, secret, limiter=self._hash_slots())
        row = ApiKeyRow(
            id=key_id,
            name=name.strip(),
            secret_hash=secret_hash,
            scopes=sorted(set(scopes), key=SCOPES.index),
            tenants=[ALL_TENANTS] if ALL_TENANTS in tenants else sorted({t.strip() for t in tenants}),
            created_at=datetime.now(UTC),
        )
        async with self._session.begin() as session:
            session.add(row)
        return NewKey(row, f"{KEY_PREFIX}_{key_id}_{secret}")

    async def list(self, *, include_revoked: bool = False) -> list[ApiKeyRow]:
        """Every key (newest first), without the revoked ones unless asked."""
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRow.revoked_at.is_(None))
        async with self._session() as session:
            return list((await session.scalars(stmt)).all())

    async def revoke(self, key_id: str) -> bool:
        """Revoke key ``key_id`` (effective at its next request). False when unknown or already revoked."""
        async with self._session.begin() as session:
            result = await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._verified.pop(key_id, None)
        return bool(getattr(result, "rowcount", 0))

    async def revoke_named(self, name: str) -> int:
        """Revoke every live key named ``name`` (``ledgerflow up`` replaces its local admin key). Returns how many."""
        async with self._session.begin() as session:
            result = await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return int(getattr(result, "rowcount", 0))

    async def replace_local_admin(self) -> str:
        """Revoke the previous local admin key and make a new one (admin, every tenant); return it.

        What ``ledgerflow up`` prints once at start: only its hash is stored.
        """
        await self.revoke_named(LOCAL_ADMIN_KEY_NAME)
        return (await self.create(LOCAL_ADMIN_KEY_NAME, ["admin"], [ALL_TENANTS])).key

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of API key ``key``, or None when it is malformed, unknown, revoked or wrong."""
        match = _KEY_RE.match(key)
        if match is None:
            return None
        key_id, secret = match.groups()
        async with self._session() as session:
            row = await session.get(ApiKeyRow, key_id)
        if row is None or row.revoked_at is not None:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        known = self._verified.get(key_id)
        if known is None or not hmac.compare_digest(known, digest):
            if not await anyio.to_thread.run_sync(self._check, row.secret_hash, secret, limiter=self._hash_slots()):
                return None
            self._verified[key_id] = digest
        now = datetime.now(UTC)
        if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
            async with self._session.begin() as session:
                await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=now))
        return Principal(
            subject=row.id,
            name=row.name,
            kind="api-key",
            scopes=expand_scopes(row.scopes),
            tenants=_tenants(row.tenants),
        )

    def _check(self, secret_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """Where OIDC access tokens come from and how their claims are read.

    Attributes:
        issuer: the ``iss`` every token must carry.
        audience: the ``aud`` every token must carry.
        jwks_url: the provider's JWKS document; None = the ``jwks_uri`` of the issuer's discovery
            document (``<issuer>/.well-known/openid-configuration``), read at the first token.
        scope_claim: claim with the scopes (space-separated string or list); ``scp`` is read too.
        tenants_claim: claim with the tenants (list or space-separated string; ``*`` = every tenant).
        leeway_seconds: clock skew tolerated on ``exp``/``nbf``/``iat``.
    """

    issuer: str
    audience: str
    jwks_url: str | None = None
    scope_claim: str = "scope"
    tenants_claim: str = "ledgerflow_tenants"
    leeway_seconds: int = 30


def _claim_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


class DiscoveryError(Exception):
    """The issuer's OpenID Connect discovery document cannot be read or names no ``jwks_uri``."""


def _discover_jwks_uri(issuer: str) -> str:
    """``jwks_uri`` of ``<issuer>/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0, section 4).

    Raises:
        DiscoveryError: the document cannot be fetched or parsed, or names no JWKS, or another issuer.
    """
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    if not url.startswith(("https://", "http://")):
        raise DiscoveryError(f"the issuer {issuer!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - scheme checked above
            document = orjson.loads(answer.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DiscoveryError(f"cannot read {url}: {exc}") from None
    jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise DiscoveryError(f"{url} names no jwks_uri")
    if document.get("issuer") != issuer:
        raise DiscoveryError(f"{url} is the document of issuer {document.get('issuer')!r}, not {issuer!r}")
    return jwks_uri


class OidcVerifier:
    """Verifies OIDC bearer tokens against the provider's JWKS (PyJWT's ``PyJWKClient``, keys cached)."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._jwks: jwt.PyJWKClient | None = None

    def _client(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            url = self.config.jwks_url or _discover_jwks_uri(self.config.issuer)
            self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
        return self._jwks

    def _decode(self, token: str) -> dict[str, Any]:
        key = self._client().get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=_ALGORITHMS,
            audience=self.config.audience,
            issuer=self.config.issuer,
            leeway=self.config.leeway_seconds,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        return claims

    async def verify(self, token: str) -> Principal:
        """The principal of ``token``.

        Raises:
            Problem: 401 when the token is not valid (signature, expiry, issuer, audience, unknown key)
                or the JWKS cannot be fetched.
        """
        try:
            claims = await anyio.to_thread.run_sync(self._decode, token)
        except (jwt.PyJWKClientError, DiscoveryError) as exc:
            raise unauthorized(f"the token's signing key cannot be found: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        scopes = _claim_list(claims.get(self.config.scope_claim)) + _claim_list(claims.get("scp"))
        tenants = _claim_list(claims.get(self.config.tenants_claim))
        subject = str(claims["sub"])
        return Principal(
            subject=subject,
            name=str(claims.get("preferred_username") or claims.get("email") or subject),
            kind="oidc",
            scopes=expand_scopes(scopes),
            tenants=_tenants(tenants),
        )


class Authenticator:
    """Turns a bearer credential into a :class:`Principal`: API keys first, then OIDC tokens (if configured)."""

    def __init__(self, keys: KeyStore, oidc: OidcVerifier | None = None) -> None:
        self.keys = keys
        self.oidc = oidc

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal of ``credential`` (the text after ``Bearer``).

        Raises:
            Problem: 401 when it is missing, unknown, revoked or invalid.
        """
        if not credential:
            raise unauthorized("send an API key or an OIDC access token as 'Authorization: Bearer <credential>'")
        if credential.startswith(KEY_PREFIX + "_"):
            principal = await self.keys.authenticate(credential)
            if principal is None:
                raise unauthorized("unknown, revoked or malformed API key")
            return principal
        if self.oidc is not None and credential.count(".") == 2:
            return await self.oidc.verify(credential)
        raise unauthorized("the credential is neither an API key nor an accepted access token")
