"""Run an ASGI app with uvicorn inside the current event loop (``ledgerflow up``, sandboxes, tests, workers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
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
async def serve(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, ready_timeout: float = 10.0, **config: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0 = a free port) until the block exits; yield its base URL.

    The socket is bound before uvicorn starts, so the URL accepts connections as soon as it is
    yielded. Extra keyword arguments go to ``uvicorn.Config`` (defaults: no access log, warnings
    only, no lifespan, 1 s graceful shutdown).

    Raises:
        OSError: the port cannot be bound.
        RuntimeError: uvicorn stopped during start-up or did not start within ``ready_timeout`` seconds.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    # whose proto says TCP, and a socket made with proto 0 passes that on to every accepted
    # connection. With Nagle on, a response written in two parts (head, body) waits for the
    # client's delayed ACK: a flat ~40 ms per request on Linux under the stdlib event loop.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    bound_port = sock.getsockname()[1]
    config.setdefault("log_level", "warning")
    config.setdefault("access_log", False)
    config.setdefault("lifespan", "off")
    config.setdefault("timeout_graceful_shutdown", 1)
    server = _EmbeddedServer(uvicorn.Config(app, **config))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"asgi-{host}:{bound_port}")
    try:
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"server on {host}:{bound_port} stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on {host}:{bound_port} did not start within {ready_timeout}s")
            await asyncio.sleep(0.01)
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
