"""Fault injection shared by the source API sandboxes that take the source writers' writes.

The INGENIOUS, Mercoa and Monite sandboxes (``ledgerflow.transformers.<source>.sandbox``) keep a
:class:`Faults` script: answers to give *before* the real one (``429``/``5xx`` with an optional
``Retry-After``), armed by tests and by the control route ``POST /_sandbox/faults``
``{"status": 503, "count": 2, "retry_after": "0", "path_prefix": "/invoice"}`` (``DELETE`` clears).
Every request outside ``/_sandbox/`` is counted in :attr:`Faults.calls` (``"METHOD /path"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

__all__ = ["Fault", "Faults", "install_faults"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One answer to give instead of the real one: ``status`` with ``Retry-After`` when set."""

    status: int
    retry_after: str | None = None
    path_prefix: str = ""


@dataclass
class Faults:
    """The armed faults (first matching one is used up per request) and every call seen."""

    armed: list[Fault] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def arm(self, status: int, *, count: int = 1, retry_after: str | None = None, path_prefix: str = "") -> None:
        """Answer the next ``count`` matching requests with ``status`` (and ``Retry-After``)."""
        self.armed.extend(Fault(status, retry_after, path_prefix) for _ in range(count))

    def take(self, path: str) -> Fault | None:
        """The next armed fault for ``path`` (removed), or None."""
        for n, fault in enumerate(self.armed):
            if path.startswith(fault.path_prefix):
                return self.armed.pop(n)
        return None


def install_faults(app: FastAPI, faults: Faults) -> None:
    """Add the fault middleware and the ``/_sandbox/faults`` control routes to ``app``."""

    async def middleware(request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path.startswith("/_sandbox/"):
            return await call_next(request)
        faults.calls.append(f"{request.method} {path}")
        fault = faults.take(path)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return JSONResponse({"error": {"message": "injected fault"}}, status_code=fault.status, headers=headers)
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=middleware)

    @app.post("/_sandbox/faults", include_in_schema=False)
    async def arm(body: dict[str, Any]) -> dict[str, int]:
        retry_after = body.get("retry_after")
        faults.arm(
            int(body["status"]),
            count=int(body.get("count", 1)),
            retry_after=None if retry_after is None else str(retry_after),
            path_prefix=str(body.get("path_prefix", "")),
        )
        return {"armed": len(faults.armed)}

    @app.delete("/_sandbox/faults", include_in_schema=False)
    async def clear() -> dict[str, int]:
        faults.armed.clear()
        return {"armed": 0}
