"""Run an ASGI app with uvicorn inside the current event loop (``ledgerflow up``, sandboxes, tests, workers).

Every server is bounded against slow or hostile clients (:class:`HttpLimits`, from the
``LEDGERFLOW_HTTP_*`` settings): the request head (request line and headers) may take at most
``max_header_bytes`` bytes and ``max_headers`` header fields (431 above, connection closed, before
more than that is buffered), a request must arrive completely within ``request_timeout`` seconds
of its first byte or of the connection being opened (408, connection closed: an idle or trickling
connection cannot be held open), and an idle keep-alive connection is closed after
``keep_alive`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ledgerflow.core import tracing
from ledgerflow.core.settings import Settings

__all__ = ["BoundedHttpToolsProtocol", "HttpLimits", "serve"]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds of one HTTP server (see the module docstring); defaults are the settings' defaults."""

    max_header_bytes: int = 32_768
    max_headers: int = 100
    request_timeout: float = 30.0
    keep_alive: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits the settings ask for.

        ``LEDGERFLOW_HTTP_MAX_HEADER_BYTES``, ``_MAX_HEADERS``, ``_REQUEST_TIMEOUT_SECONDS``, ``_KEEP_ALIVE_SECONDS``.
        """
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            request_timeout=settings.http_request_timeout_seconds,
            keep_alive=settings.http_keep_alive_seconds,
        )


_END_OF_HEAD = b"\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HttpLimits` enforced (subclassed per server with ``limits``).

    The head's size is counted on the raw bytes as they arrive, before httptools buffers them, so a
    client sending a 20 MB header costs at most ``max_header_bytes`` (plus one read) of memory.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
        self._header_count = 0
        self._closed_by_limit = False
        self._request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection and start its request timer (an idle new connection is bounded too)."""
        super().connection_made(transport)
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and its timer."""
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the head's bytes before parsing; answer 431 and close once it is over the limit."""
        if self._closed_by_limit:
            return
        if self._request_timer is None:
            self._arm_request_timer()
        if self._in_head:
            window = self._tail + data
            end = window.find(_END_OF_HEAD)
            self._head_bytes += (end + len(_END_OF_HEAD) - len(self._tail)) if end >= 0 else len(data)
            self._tail = window[-(len(_END_OF_HEAD) - 1) :]
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large", "request head too large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        """A new request starts: reset the header count."""
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep one header field; answer 431 and close when there are more than ``max_headers``."""
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            if not self._closed_by_limit:
                self._refuse(431, "Request Header Fields Too Large", "too many header fields")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is complete: hand the request to the app unless a limit already closed the connection."""
        if self._closed_by_limit:
            return
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request arrived completely: stop its timer; the next bytes are the next request's head."""
        self._cancel_request_timer()
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
        if self._closed_by_limit:
            return
        super().on_message_complete()

    def on_body(self, body: bytes) -> None:
        """Pass the body on unless a limit closed the connection."""
        if not self._closed_by_limit:
            super().on_body(body)

    def _arm_request_timer(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(self.limits.request_timeout, self._request_timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self._refuse(408, "Request Timeout", "the request did not arrive in time")
        else:
            self.transport.close()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answer ``status`` with a short text and close the connection (no more bytes are read)."""
        self._closed_by_limit = True
        self._cancel_request_timer()
        body = detail.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        self.transport.close()


def _protocol_for(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    return type("LimitedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready_timeout: float = 10.0,
    limits: HttpLimits | None = None,
    **config: Any,
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0 = a free port) until the block exits; yield its base URL.

    The socket is bound before uvicorn starts, so the URL accepts connections as soon as it is
    yielded. ``limits`` bound header size and count, request time and keep-alive (default
    :class:`HttpLimits`; callers pass :meth:`HttpLimits.from_settings`). Extra keyword arguments go
    to ``uvicorn.Config`` (defaults: no access log, warnings only, no lifespan, 1 s graceful shutdown).

    Raises:
        OSError: the port cannot be bound (the message names ``host:port``; ``errno`` kept).
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
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    bound_port = sock.getsockname()[1]
    config.setdefault("log_level", "warning")
    config.setdefault("access_log", False)
    config.setdefault("lifespan", "off")
    config.setdefault("timeout_graceful_shutdown", 1)
    bounds = limits or HttpLimits()
    config.setdefault("http", _protocol_for(bounds))
    config.setdefault("timeout_keep_alive", bounds.keep_alive)
    config.setdefault("h11_max_incomplete_event_size", bounds.max_header_bytes)
    server = _EmbeddedServer(uvicorn.Config(tracing.instrument_asgi(app), **config))
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
