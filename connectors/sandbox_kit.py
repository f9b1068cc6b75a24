"""Building blocks for local ERP sandboxes (FastAPI apps on the ERPs' real paths).

An ERP sandbox (``connectors/<erp>/sandbox.py``) builds a :class:`Sandbox` and adds its own
routes to ``sandbox.app``. The kit gives it:

* :class:`RecordStore` — in-memory records by kind (``bill``, ``vendor``…), id sequence and an
  idempotency replay cache (:meth:`RecordStore.idempotent`: same key → the original response,
  no second record, concurrent duplicates serialised);
* fault injection (ASGI middleware) driven by a control API::

      POST   /_sandbox/faults   {"status": 429|500|503, "count": N, "retry_after": s}
                                {"delay": s, "count": N}          (answer late)
                                {"drop": true, "count": N}        (close the connection unanswered)
                                {"body": "html"|"truncated"|"no_id", "count": N}
                                                                  (2xx that is not the ERP's answer)
                                optional "path_prefix": only requests whose path starts with it
      DELETE /_sandbox/faults   clear
      GET    /_sandbox/faults   what is armed
      GET    /_sandbox/records  [?kind=bill] → {"records": [{"kind", "id", "total", "record"}]}
      PATCH  /_sandbox/records/{kind}/{id}   alter what the ERP stored: a JSON Patch (RFC 6902,
                                a JSON array) or a JSON Merge Patch (RFC 7396, an object), e.g.
                                [{"op": "replace", "path": "/Line/0/Amount", "value": 90}]
                                → {"kind", "id", "total", "record"} after the change; 404 unknown
                                record, 422 a patch that does not apply. Read-back and
                                reconciliation tests use it to make the ERP differ from the source.
      POST   /_sandbox/alterations {"kind": "bill", "patch": <JSON Patch or Merge Patch>, "count": N}
                                alter the next N records of that kind *as they are stored*, so the
                                write's own answer already differs from what was sent (an ERP that
                                books something else: read-back verification and `ledgerflow
                                reconcile` must notice); DELETE /_sandbox/alterations disarms

  Faults apply to every path outside ``/_sandbox/`` (also the token endpoint);
* :class:`OAuthIssuer` — an OAuth 2.0 token endpoint (RFC 6749 §4.4, §6) that checks client
  credentials (HTTP Basic or form fields), issues bearer tokens, rotates refresh tokens on
  every refresh (the old one stops working) and rejects bad ones with ``invalid_grant``; and
  the authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636 ``S256`` only): an authorize
  endpoint that consents at once (redirects with ``code`` and ``state``, plus the vendor's extra
  parameters such as Intuit's ``realmId``) after checking ``response_type``, ``client_id``,
  ``redirect_uri``, ``scope`` and the code challenge, and single-use codes (10 minutes) whose
  exchange checks the client, the ``redirect_uri`` and the ``code_verifier``;
* :class:`DecimalJSONResponse` / :func:`read_json` — JSON with exact decimals;
* :func:`serve` — runs an app with uvicorn in this process on a free loopback port::

      async with serve(create_app(), host="127.0.0.1", port=0) as base_url:
          ...   # base_url == "http://127.0.0.1:<port>", accepting connections

* :class:`SandboxControl` — a small client of the control API for tests and the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerflow.core.asgi import serve
from ledgerflow.core.outbound.client import dumps_json, loads_json
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "DecimalJSONResponse",
    "FaultSpec",
    "OAuthIssuer",
    "RecordStore",
    "Sandbox",
    "SandboxControl",
    "point_at",
    "read_json",
    "serve",
    "spec_file",
]

CONTROL_PREFIX = "/_sandbox/"


def point_at(config: ConnectionConfig, base_url: str, credentials: Mapping[str, str]) -> ConnectionConfig:
    """``config`` pointed at a running sandbox: its base URL and the credentials it accepts (options kept)."""
    return ConnectionConfig.model_validate({**config.model_dump(), "base_url": base_url, "credentials": credentials})


def spec_file(name: str) -> Path:
    """Where a vendor's API description lives.

    ``$LEDGERFLOW_SPECS_DIR/<name>``, else ``../shared/specs/<name>`` beside the project. The file
    may not exist: sandboxes then skip validation.
    """
    base = os.environ.get("LEDGERFLOW_SPECS_DIR")
    root = Path(base) if base else Path(__file__).resolve().parents[1].parent / "shared" / "specs"
    return root / name


class DecimalJSONResponse(JSONResponse):
    """A JSON response writing ``Decimal`` as exact JSON numbers (``ledgerflow.core.outbound.client.dumps_json``)."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return dumps_json(content)


async def read_json(request: Request) -> Any:
    """The request body parsed as JSON with fractional numbers as ``Decimal``.

    Raises:
        ValueError: the body is not JSON.

    """
    return loads_json(await request.body())


# --------------------------------------------------------------------------------------------
# Records and idempotency


@dataclass(frozen=True, slots=True)
class _Replay:
    status: int
    body: bytes
    media_type: str | None
    headers: tuple[tuple[str, str], ...]


class RecordStore:
    """In-memory records by kind, with an id sequence and an idempotency replay cache.

    Records are plain dicts (the ERP's own JSON shape). Not thread-safe; used from one event loop.
    """

    def __init__(self, first_id: int = 1) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._ids = itertools.count(first_id)
        self._replays: dict[tuple[str, str], _Replay] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._alterations: dict[str, list[tuple[Any, int]]] = {}

    def next_id(self) -> str:
        """A new numeric id, as a string (QuickBooks style; Xero sandboxes use UUIDs instead)."""
        return str(next(self._ids))

    def put(self, kind: str, record_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store (insert or replace) ``record`` under ``kind``/``record_id`` and return it.

        An alteration armed for ``kind`` (:meth:`alter_next`) is applied to ``record`` in place
        first, so what the sandbox answers is what it stored.
        """
        armed = self._alterations.get(kind)
        if armed:
            patch, left = armed[0]
            changed = patched(record, patch)
            record.clear()
            record.update(changed)
            if left <= 1:
                armed.pop(0)
            else:
                armed[0] = (patch, left - 1)
        self.records[kind][record_id] = record
        return record

    def alter_next(self, kind: str, patch: Any, count: int = 1) -> None:
        """Alter the next ``count`` records of ``kind`` stored with ``patch`` (see :func:`patched`)."""
        self._alterations.setdefault(kind, []).append((patch, count))

    def clear_alterations(self) -> None:
        """Disarm every alteration."""
        self._alterations.clear()

    def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        """The record, or None."""
        return self.records.get(kind, {}).get(record_id)

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every record of ``kind``, in insertion order."""
        return list(self.records.get(kind, {}).values())

    def find(self, kind: str, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Records of ``kind`` for which ``predicate`` is true."""
        return [r for r in self.records.get(kind, {}).values() if predicate(r)]

    async def idempotent(self, scope: str, key: str | None, handler: Callable[[], Awaitable[Response]]) -> Response:
        """Run ``handler`` once per (``scope``, ``key``); later calls replay the first response.

        Responses with status 429 or ≥ 500 are not remembered (the request did not happen).
        ``key`` None runs ``handler`` every time (the ERP's behaviour without a key).
        """
        if not key:
            return await handler()
        slot = (scope, key)
        async with self._locks[slot]:
            replay = self._replays.get(slot)
            if replay is not None:
                return Response(
                    replay.body, status_code=replay.status, media_type=replay.media_type, headers=dict(replay.headers)
                )
            response = await handler()
            if response.status_code != 429 and response.status_code < 500:
                headers = tuple((k, v) for k, v in response.headers.items() if k.lower() not in ("content-length",))
                self._replays[slot] = _Replay(response.status_code, bytes(response.body), response.media_type, headers)
            return response


# --------------------------------------------------------------------------------------------
# Fault injection


class FaultSpec(BaseModel):
    """One armed fault: an error status, a delay or a dropped connection, for the next ``count`` requests."""

    status: Literal[429, 500, 502, 503, 504] | None = Field(None, description="Answer with this status.")
    retry_after: float | None = Field(None, ge=0, description="Retry-After seconds sent with the status.")
    delay: float | None = Field(None, ge=0, le=120, description="Seconds to wait before handling normally.")
    drop: bool = Field(False, description="Close the connection without a complete answer.")
    body: Literal["html", "truncated", "no_id"] | None = Field(
        None,
        description="Answer 2xx with a body that is not the ERP's: an HTML page (request not handled), the "
        "real answer cut in half (request handled), or an empty JSON object (request handled).",
    )
    count: int = Field(1, ge=1, le=100_000, description="Requests affected.")
    path_prefix: str | None = Field(None, description="Only requests whose path starts with this.")

    @model_validator(mode="after")
    def _one_kind(self) -> FaultSpec:
        kinds = sum((self.status is not None, self.delay is not None, self.drop, self.body is not None))
        if kinds != 1:
            raise ValueError("give exactly one of status, delay, drop, body")
        return self


class _FaultMiddleware:
    """ASGI middleware applying the armed :class:`FaultSpec` to non-control requests."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        fault = self.sandbox.take_fault(str(scope["path"]))
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay is not None:
            await asyncio.sleep(fault.delay)
            await self.app(scope, receive, send)
            return
        if fault.drop:
            # Promise a body, send none, return: the server closes the connection mid-answer.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
            return
        if fault.body is not None:
            await self._garbled(fault.body, scope, receive, send)
            return
        assert fault.status is not None
        response = self.sandbox.fault_response(fault)
        await response(scope, receive, send)

    async def _garbled(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 200 with a body that is not the ERP's (see :class:`FaultSpec` ``body``)."""
        if kind == "html":
            page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
            await _send_body(send, 200, b"text/html; charset=utf-8", page)
            return
        status = 200
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, capture)
        real = b"".join(chunks)
        garbled = real[: len(real) // 2] if kind == "truncated" else b"{}"
        await _send_body(send, status if 200 <= status < 300 else 200, b"application/json", garbled)


async def _send_body(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------------------
# OAuth 2.0 token endpoint


class OAuthIssuer:
    """Issues and checks OAuth 2.0 bearer tokens for one sandbox.

    Args:
        clients: client id → client secret accepted at the token endpoint.
        refresh_tokens: single-use refresh tokens valid at start (rotated away on first use).
        consent_tokens: refresh tokens that stay valid after use: each stands for a fresh consent,
            so several connections (or test cases) can start from the same configured token;
            the tokens they rotate to are single-use.
        access_ttl: ``expires_in`` of access tokens, seconds.
        refresh_ttl: ``x_refresh_token_expires_in`` reported (QuickBooks style), seconds.
        scopes: scopes a consent may ask for (the request's must be a non-empty subset); empty =
            no authorization-code grant.
        required_scopes: scopes every consent must ask for (Intuit: the accounting scope).
        redirect_uris: redirect URIs registered for the clients; empty = any loopback
            ``http://127.0.0.1:<port>/…`` or ``http://localhost:<port>/…`` URI (RFC 8252 §7.3).
        callback_params: extra query parameters of the consent redirect (Intuit: ``realmId``).
        client_auth: ``"basic"``: the client authenticates with HTTP Basic only (Intuit, Xero);
            ``"any"``: Basic or ``client_id``/``client_secret`` form fields.
        offline_scope: a code exchange answers a refresh token only if the consent asked for
            this scope (Xero: ``offline_access``); None = always.

    """

    def __init__(
        self,
        clients: Mapping[str, str],
        *,
        refresh_tokens: Iterable[str] = (),
        consent_tokens: Iterable[str] = (),
        access_ttl: int = 3600,
        refresh_ttl: int = 8_726_400,
        scopes: Iterable[str] = (),
        required_scopes: Iterable[str] = (),
        redirect_uris: Iterable[str] = (),
        callback_params: Mapping[str, str] | None = None,
        client_auth: Literal["basic", "any"] = "any",
        offline_scope: str | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.refresh_tokens: set[str] = set(refresh_tokens)
        self.consent_tokens: frozenset[str] = frozenset(consent_tokens)
        self.access_tokens: dict[str, float] = {}
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.refreshes = 0
        self.scopes = frozenset(scopes)
        self.required_scopes = frozenset(required_scopes)
        self.redirect_uris: set[str] = set(redirect_uris)
        self.callback_params = dict(callback_params or {})
        self.client_auth = client_auth
        self.offline_scope = offline_scope
        self.codes: dict[str, _Grant] = {}
        """Authorization codes not yet exchanged (single use)."""
        self.consents = 0
        """Number of consents given (authorize requests answered with a code)."""

    def issue_refresh_token(self) -> str:
        """Mint a new valid refresh token (what a consent flow would hand out)."""
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        return token

    def revoke_access_tokens(self) -> None:
        """Invalidate every access token (forces clients to refresh)."""
        self.access_tokens.clear()

    def verify(self, authorization: str | None) -> bool:
        """True if ``authorization`` is ``Bearer <a live access token>``."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        expires = self.access_tokens.get(authorization.removeprefix("Bearer ").strip())
        return expires is not None and expires > time.monotonic()

    def _client(self, request: Request, form: Mapping[str, str]) -> str | None:
        """The authenticated client id of a token request, or None."""
        header = request.headers.get("authorization", "")
        client_id: str | None
        secret: str | None
        if header.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
        elif self.client_auth == "basic":
            return None
        else:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None or secret is None or client_id not in self.clients:
            return None
        return client_id if secrets.compare_digest(self.clients[client_id], secret) else None

    def _redirect_ok(self, uri: str) -> bool:
        if self.redirect_uris:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost") and not parts.fragment

    async def authorize_endpoint(self, request: Request) -> Response:
        """``GET`` handler: the consent page, approving at once (RFC 6749 §4.1.1-4.1.2, RFC 7636 §4.3).

        An unknown ``client_id`` or a ``redirect_uri`` not registered answers 400 here (never a
        redirect: §4.1.2.1); any other error redirects with ``error`` and the ``state``.
        """
        query = request.query_params
        client_id, redirect_uri, state = query.get("client_id", ""), query.get("redirect_uri", ""), query.get("state")
        if client_id not in self.clients:
            return JSONResponse({"error": "invalid_client", "error_description": "unknown client_id"}, 400)
        if not self._redirect_ok(redirect_uri):
            return JSONResponse({"error": "invalid_request", "error_description": "redirect_uri not registered"}, 400)

        def refuse(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description, **({"state": state} if state else {})}
            return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)

        if query.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        asked = set((query.get("scope") or "").split())
        if not asked or not asked <= self.scopes or not self.required_scopes <= asked:
            return refuse("invalid_scope", f"scope must be among {' '.join(sorted(self.scopes))}")
        if not state:
            return refuse("invalid_request", "state is required")
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or not _PKCE_VALUE.fullmatch(challenge):
            return refuse("invalid_request", "a code_challenge with code_challenge_method=S256 is required")
        code = "code-" + secrets.token_urlsafe(24)
        self.codes[code] = _Grant(client_id, redirect_uri, challenge, " ".join(sorted(asked)), time.monotonic() + 600)
        self.consents += 1
        params = {"code": code, "state": state, **self.callback_params}
        return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)

    def _exchange(self, client_id: str, form: Mapping[str, str]) -> JSONResponse | _Grant:
        """Check an ``authorization_code`` grant (the code is spent whatever the outcome): the grant, or the refusal."""
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant.expires < time.monotonic() or grant.client_id != client_id:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown, used or expired code"}, 400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, 400)
        verifier = form.get("code_verifier", "")
        if not _PKCE_VALUE.fullmatch(verifier):
            return JSONResponse({"error": "invalid_request", "error_description": "code_verifier missing"}, 400)
        if not secrets.compare_digest(create_s256_code_challenge(verifier), grant.challenge):
            return JSONResponse({"error": "invalid_grant", "error_description": "code_verifier mismatch"}, 400)
        return grant

    async def token_endpoint(self, request: Request) -> Response:
        """``POST`` handler: grants ``authorization_code`` (PKCE), ``refresh_token`` (rotating), client credentials."""
        # application/x-www-form-urlencoded (RFC 6749 §4.1.3), parsed by the stdlib.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        client_id = self._client(request, form)
        if client_id is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = form.get("grant_type")
        body: dict[str, Any]
        if grant == "authorization_code":
            granted = self._exchange(client_id, form)
            if isinstance(granted, JSONResponse):
                return granted
            body = {"scope": granted.scope}
            if self.offline_scope is None or self.offline_scope in granted.scope.split():
                body.update(refresh_token=self.issue_refresh_token(), x_refresh_token_expires_in=self.refresh_ttl)
        elif grant == "refresh_token":
            old = form.get("refresh_token", "")
            if old not in self.refresh_tokens and old not in self.consent_tokens:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            self.refresh_tokens.discard(old)
            body = {"refresh_token": self.issue_refresh_token(), "x_refresh_token_expires_in": self.refresh_ttl}
            self.refreshes += 1
        elif grant == "client_credentials":
            body = {}
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access = "at-" + secrets.token_urlsafe(24)
        self.access_tokens[access] = time.monotonic() + self.access_ttl
        body.update({"access_token": access, "token_type": "bearer", "expires_in": self.access_ttl})
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


_PKCE_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
"""A code verifier (RFC 7636 §4.1) or an S256 challenge (43 base64url characters)."""


@dataclass(frozen=True, slots=True)
class _Grant:
    """An authorization code's grant: who asked, where to, the PKCE challenge, the scope, until when."""

    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    expires: float


# --------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """State and app of one ERP sandbox: records, faults, OAuth issuer and control routes.

    Args:
        title: app title.
        issuer: the token issuer.
        token_path: where the token endpoint is mounted (e.g. ``/oauth2/v1/tokens/bearer``).
        authorize_path: where the consent (authorize) endpoint is mounted, if the ERP has one
            (the vendor's path, e.g. Intuit's ``/connect/oauth2``).
        total_of: the total of a stored record for ``/_sandbox/records`` (None if it has none).
        fault_body: body of injected error responses, in the ERP's error shape, from (status).
        fault_headers: extra headers of injected error responses, from (status)
            (e.g. Xero's ``X-Rate-Limit-Problem`` on 429).

    The FastAPI app is :attr:`app`; ERP routes are added to it by the ERP's ``create_app``.
    """

    def __init__(
        self,
        title: str,
        *,
        issuer: OAuthIssuer,
        token_path: str,
        authorize_path: str | None = None,
        total_of: Callable[[str, dict[str, Any]], Decimal | None] = lambda kind, record: None,
        fault_body: Callable[[int], Any] = lambda status: {"message": f"injected fault {status}"},
        fault_headers: Callable[[int], Mapping[str, str]] = lambda status: {},
    ) -> None:
        self.store = RecordStore()
        self.issuer = issuer
        self.total_of = total_of
        self.fault_body = fault_body
        self.fault_headers = fault_headers
        self.fault: FaultSpec | None = None
        self._fault_left = 0
        self.requests = 0
        self.app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
        self.app.state.sandbox = self
        self.app.add_middleware(_FaultMiddleware, sandbox=self)
        self.app.add_api_route(token_path, issuer.token_endpoint, methods=["POST"], include_in_schema=False)
        if authorize_path is not None:
            self.app.add_api_route(authorize_path, issuer.authorize_endpoint, methods=["GET"], include_in_schema=False)
        self.app.add_api_route("/_sandbox/faults", self._arm, methods=["POST"])
        self.app.add_api_route("/_sandbox/faults", self._clear, methods=["DELETE"])
        self.app.add_api_route("/_sandbox/faults", self._show, methods=["GET"])
        self.app.add_api_route("/_sandbox/records", self._records, methods=["GET"])
        self.app.add_api_route("/_sandbox/records/{kind}/{record_id:path}", self._alter, methods=["PATCH"])
        self.app.add_api_route("/_sandbox/alterations", self._arm_alteration, methods=["POST"])
        self.app.add_api_route("/_sandbox/alterations", self._clear_alterations, methods=["DELETE"])

    def take_fault(self, path: str) -> FaultSpec | None:
        """Consume one use of the armed fault if it applies to ``path``."""
        self.requests += 1
        fault = self.fault
        if fault is None or self._fault_left <= 0:
            return None
        if fault.path_prefix and not path.startswith(fault.path_prefix):
            return None
        self._fault_left -= 1
        if self._fault_left == 0:
            self.fault = None
        return fault

    def fault_response(self, fault: FaultSpec) -> Response:
        """The error response for an armed status fault (ERP error shape, Retry-After if set)."""
        assert fault.status is not None
        headers = dict(self.fault_headers(fault.status))
        if fault.retry_after is not None:
            headers["Retry-After"] = format(fault.retry_after, "g")
        return DecimalJSONResponse(self.fault_body(fault.status), status_code=fault.status, headers=headers)

    def arm(self, fault: FaultSpec) -> None:
        """Arm ``fault`` (replacing any armed one)."""
        self.fault = fault
        self._fault_left = fault.count

    async def _arm(self, fault: FaultSpec) -> dict[str, Any]:
        self.arm(fault)
        return {"armed": fault.model_dump(exclude_none=True)}

    async def _clear(self) -> Response:
        self.fault = None
        self._fault_left = 0
        return Response(status_code=204)

    async def _show(self) -> dict[str, Any]:
        armed = self.fault.model_dump(exclude_none=True) if self.fault else None
        return {"armed": armed, "remaining": self._fault_left, "requests": self.requests}

    async def _records(self, kind: str | None = None) -> Response:
        kinds = [kind] if kind else sorted(self.store.records)
        listing = [
            {"kind": k, "id": rid, "total": self.total_of(k, rec), "record": rec}
            for k in kinds
            for rid, rec in self.store.records.get(k, {}).items()
        ]
        return DecimalJSONResponse({"records": listing})

    def alter(self, kind: str, record_id: str, patch: Any) -> dict[str, Any]:
        """Change the stored record ``kind``/``record_id`` in place and return it.

        ``patch`` is a JSON Patch (RFC 6902: a list of operations, applied with ``jsonpatch``) or
        a JSON Merge Patch (RFC 7396: an object; ``null`` removes a member).

        Raises:
            KeyError: no such record.
            ValueError: the patch is neither, or does not apply (e.g. a path that does not exist).
        """
        record = self.store.get(kind, record_id)
        if record is None:
            raise KeyError(f"no {kind} record {record_id}")
        changed = patched(record, patch)
        record.clear()
        record.update(changed)
        return record

    async def _arm_alteration(self, request: Request) -> Response:
        try:
            spec = await read_json(request)
        except ValueError as exc:
            return JSONResponse({"message": str(exc)}, status_code=422)
        if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str) or "patch" not in spec:
            return JSONResponse({"message": 'give {"kind": "...", "patch": ..., "count": N}'}, status_code=422)
        if not isinstance(spec["patch"], list | dict):
            return JSONResponse({"message": "patch: a JSON Patch (array) or Merge Patch (object)"}, status_code=422)
        count = int(spec.get("count", 1))
        self.store.alter_next(spec["kind"], spec["patch"], count)
        return JSONResponse({"armed": {"kind": spec["kind"], "count": count}})

    async def _clear_alterations(self) -> Response:
        self.store.clear_alterations()
        return Response(status_code=204)

    async def _alter(self, request: Request, kind: str, record_id: str) -> Response:
        try:
            patch = await read_json(request)
            record = self.alter(kind, record_id, patch)
        except KeyError as exc:
            return JSONResponse({"message": str(exc.args[0])}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"message": str(exc)}, status_code=422)
        return DecimalJSONResponse(
            {"kind": kind, "id": record_id, "total": self.total_of(kind, record), "record": record}
        )


def patched(record: dict[str, Any], patch: Any) -> dict[str, Any]:
    """``record`` changed by ``patch`` (``record`` itself is not modified).

    ``patch`` is a JSON Patch (RFC 6902: a list of operations, applied with ``jsonpatch``) or a
    JSON Merge Patch (RFC 7396: an object; ``null`` removes a member).

    Raises:
        ValueError: the patch is neither, does not apply, or leaves no JSON object.
    """
    import jsonpatch  # the sandbox extra; imported here so the kit loads without it

    if isinstance(patch, list):
        try:
            changed = jsonpatch.apply_patch(record, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise ValueError(f"JSON Patch does not apply: {exc}") from exc
    elif isinstance(patch, dict):
        changed = _merge_patch(record, patch)
    else:
        raise ValueError("give a JSON Patch (array) or a JSON Merge Patch (object)")
    if not isinstance(changed, dict):
        raise ValueError("the patch must leave the record a JSON object")
    return changed


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch of ``target`` (not modified) by ``patch``."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class SandboxControl:
    """Client of a sandbox's control API (tests, the CLI, demos).

    Args:
        http: any ``httpx.AsyncClient``.
        base_url: the sandbox's base URL (as yielded by :func:`serve`).

    """

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def inject(
        self,
        *,
        status: int | None = None,
        count: int = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        drop: bool = False,
        garbage: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Arm a fault (see :class:`FaultSpec`; ``garbage`` is its ``body``: html, truncated, no_id).

        Raises:
            httpx.HTTPStatusError: the sandbox refused the spec.

        """
        body: dict[str, Any] = {"count": count}
        for key, value in (
            ("status", status),
            ("retry_after", retry_after),
            ("delay", delay),
            ("body", garbage),
            ("path_prefix", path_prefix),
        ):
            if value is not None:
                body[key] = value
        if drop:
            body["drop"] = True
        (await self.http.post(f"{self.base_url}/_sandbox/faults", json=body)).raise_for_status()

    async def clear(self) -> None:
        """Disarm faults."""
        (await self.http.delete(f"{self.base_url}/_sandbox/faults")).raise_for_status()

    async def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Stored records (``{"kind", "id", "total", "record"}``, totals as ``Decimal``)."""
        params = {"kind": kind} if kind else None
        response = await self.http.get(f"{self.base_url}/_sandbox/records", params=params)
        response.raise_for_status()
        records: list[dict[str, Any]] = loads_json(response.content)["records"]
        return records

    async def alter_next(self, kind: str, patch: Any, count: int = 1) -> None:
        """Make the sandbox store the next ``count`` records of ``kind`` altered by ``patch``.

        An ERP booking something other than it was sent (see :meth:`RecordStore.alter_next`).

        Raises:
            httpx.HTTPStatusError: a malformed spec (422).
        """
        response = await self.http.post(
            f"{self.base_url}/_sandbox/alterations",
            content=dumps_json({"kind": kind, "patch": patch, "count": count}),
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()

    async def alter(self, kind: str, record_id: str, patch: Any) -> dict[str, Any]:
        """Change what the sandbox stored (see :meth:`Sandbox.alter`); returns ``{"kind", "id", "total", "record"}``.

        Raises:
            httpx.HTTPStatusError: unknown record (404) or a patch that does not apply (422).

        """
        response = await self.http.patch(
            f"{self.base_url}/_sandbox/records/{kind}/{record_id}",
            content=dumps_json(patch),
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
        altered: dict[str, Any] = loads_json(response.content)
        return altered


# --------------------------------------------------------------------------------------------
# Serving in-process
