"""Run an ASGI app with uvicorn inside the current event loop (``ledgerflow up``, tests, workers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

__all__ = ["serve"]


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0 = a free port) until the block exits; yields the base URL.

    The socket is bound before uvicorn starts, so the URL is valid as soon as it is yielded.

    Raises:
        OSError: when the port cannot be bound.
        RuntimeError: when uvicorn fails to start.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    bound_port = sock.getsockname()[1]
    cfg = uvicorn.Config(app, log_level=config.pop("log_level", "warning"), lifespan="off", **config)
    server = _EmbeddedServer(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
