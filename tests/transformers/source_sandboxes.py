"""Local sandboxes of the source APIs the enrichment clients call (FastAPI, served in-process).

Each keeps a script of failures to inject (``fail``: list of (status, Retry-After) answered
before the real one) and counts calls, so tests see retries, auth and caching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse


@dataclass
class Script:
    fail: list[tuple[int, str | None]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_from: int | None = None
    """When set, every call from this (0-based) call number on answers 503 (an outage in mid-run)."""

    def next_failure(self, path: str) -> JSONResponse | None:
        self.calls.append(path)
        if self.fail_from is not None and len(self.calls) > self.fail_from:
            return JSONResponse({"error": "outage"}, status_code=503, headers={"Retry-After": "0"})
        if self.fail:
            status, retry_after = self.fail.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return JSONResponse({"error": "injected"}, status_code=status, headers=headers)
        return None


def ingenious_app(script: Script, token: str, objects: dict[tuple[str, str], dict[str, Any]]) -> FastAPI:
    """INGENIOUS Public API: ``GET /accounting-<kind>s/{id}`` with ``Authorization: Bearer``."""
    app = FastAPI()
    kinds = {"companies": "company", "cost-codes": "cost_code", "entities": "entity", "projects": "project"}

    @app.get("/accounting-{plural}/{object_id}")
    async def get_object(plural: str, object_id: str, request: Request, authorization: str = Header("")) -> Any:
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "bad token")
        if (failure := script.next_failure(request.url.path)) is not None:
            return failure
        found = objects.get((kinds.get(plural, plural), object_id))
        if found is None:
            raise HTTPException(404, "not found")
        return {"data": found}

    return app


def monite_app(script: Script, client_id: str, client_secret: str, objects: dict[str, Any]) -> FastAPI:
    """Monite: ``POST /auth/token`` then GETs needing bearer, X-Monite-Version and X-Monite-Entity-Id."""
    app = FastAPI()

    @app.post("/auth/token")
    async def token(body: dict[str, Any], x_monite_version: str = Header("")) -> Any:
        if not x_monite_version:
            raise HTTPException(400, "X-Monite-Version required")
        if body.get("grant_type") != "client_credentials" or (body.get("client_id"), body.get("client_secret")) != (
            client_id,
            client_secret,
        ):
            raise HTTPException(401, "bad client")
        script.calls.append("/auth/token")
        return {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 1800}

    @app.get("/{path:path}")
    async def get(
        path: str,
        request: Request,
        authorization: str = Header(""),
        x_monite_version: str = Header(""),
        x_monite_entity_id: str = Header(""),
    ) -> Any:
        if authorization != "Bearer tok-1" or not x_monite_version or not x_monite_entity_id:
            raise HTTPException(401, "missing auth headers")
        if (failure := script.next_failure(request.url.path)) is not None:
            return failure
        if f"/{path}" not in objects:
            raise HTTPException(404, "not found")
        return objects[f"/{path}"]

    return app


def mercoa_app(script: Script, api_key: str, invoices: dict[str, Any], entities: dict[str, Any]) -> FastAPI:
    """Mercoa: ``GET /invoice/{id}`` and ``GET /entity/{id}`` with the API key as bearer."""
    app = FastAPI()

    def check(auth: str) -> None:
        if auth != f"Bearer {api_key}":
            raise HTTPException(401, "bad key")

    @app.get("/invoice/{invoice_id}")
    async def invoice(invoice_id: str, request: Request, authorization: str = Header("")) -> Any:
        check(authorization)
        if (failure := script.next_failure(request.url.path)) is not None:
            return failure
        if invoice_id not in invoices:
            raise HTTPException(404, "not found")
        return invoices[invoice_id]

    @app.get("/entity/{entity_id}")
    async def entity(entity_id: str, request: Request, authorization: str = Header("")) -> Any:
        check(authorization)
        if (failure := script.next_failure(request.url.path)) is not None:
            return failure
        return entities[entity_id]

    return app


def accessplanit_app(script: Script, api_key: str, feeds: dict[str, list[dict[str, Any]]]) -> FastAPI:
    """accessplanit API v2 feeds with ``$filter=<field> ge <value>``, ``$orderby``, ``$top``, ``$skip``."""
    app = FastAPI()

    @app.get("/{resource}")
    async def feed(resource: str, request: Request, x_api_key: str = Header("")) -> Any:
        if x_api_key != api_key:
            raise HTTPException(401, "bad key")
        if (failure := script.next_failure(str(request.url))) is not None:
            return failure
        q = request.query_params
        rows = list(feeds.get(resource, []))
        if q.get("$filter"):
            field_name, op, value = q["$filter"].split(" ", 2)
            assert op == "ge"
            rows = [r for r in rows if str(r[field_name]) >= value]
        field_name = q.get("$orderby", "DateUpdated asc").split(" ")[0]
        rows.sort(key=lambda r: str(r[field_name]))
        skip, top = int(q.get("$skip", 0)), int(q.get("$top", 100))
        return {"value": rows[skip : skip + top]}

    @app.get("/{resource}/{item_id}")
    async def item(resource: str, item_id: str, request: Request, x_api_key: str = Header("")) -> Any:
        """One record by id (``/accounts/8812``: the account an invoice is issued to)."""
        if x_api_key != api_key:
            raise HTTPException(401, "bad key")
        if (failure := script.next_failure(str(request.url))) is not None:
            return failure
        for row in feeds.get(resource, []):
            if any(str(v) == item_id for k, v in row.items() if k.lower().endswith("id")):
                return row
        raise HTTPException(404, "not found")

    return app
