"""The small HTTP side of every worker (``/healthz``, ``/readyz``, ``/metrics``) and what each service's entry shares.

Each service has one entry, ``ledgerflow.<service>.main``: an async context manager that starts
the service and stops it when the block exits, used both by its CLI command and by the
in-process stack (:mod:`ledgerflow.app.stack`). The consumer groups a service consumes in, with
their topics, are its :data:`LagWatch`: the entry reports their lag itself, or hands them to the
caller (the stack reports the lag of every service from one reporter).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["LagWatch", "Readiness", "broker_readiness", "health_app"]

Readiness = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else the reason."""

LagWatch = list[tuple[str, list[str]]]
"""(consumer group, its topics) for each group a service consumes in (:func:`ledgerflow.core.lag.lag_reporter`)."""


def broker_readiness(broker: object, timeout: float = 3.0) -> Readiness:
    """A readiness check that is ready while ``broker`` (a FastStream broker) answers a ping within ``timeout`` s."""

    async def ready() -> str | None:
        ping = getattr(broker, "ping", None)
        if ping is not None and not await ping(timeout=timeout):
            return "broker unreachable"
        return None

    return ready


def health_app(readiness: Readiness | None = None) -> Starlette:
    """An ASGI app with ``/healthz`` (alive), ``/readyz`` (``readiness`` is None → 200, else 503) and ``/metrics``."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        reason = await readiness() if readiness else None
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)],
    )
