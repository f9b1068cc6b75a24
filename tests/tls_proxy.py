"""A TLS-terminating TCP proxy for tests: TLS (optionally mutual) on one port, plain TCP behind it.

Put in front of the embedded broker (which advertises the proxy's address), it makes a Kafka
listener that speaks TLS only, as a production listener does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from ledgerflow.core.embedded import free_port

__all__ = ["TlsProxy"]


class TlsProxy:
    """Accepts TLS on ``127.0.0.1:port`` and pipes each connection to ``upstream`` in plain TCP.

    Args:
        context: the server-side TLS context (``verify_mode=CERT_REQUIRED`` for mutual TLS).
        upstream: ``(host, port)`` of the plain listener.
        port: the port to listen on (a free one if None).

    """

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int] | None = None, port: int | None = None):
        self.context = context
        self.upstream = upstream
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (``upstream`` must be set by then)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)

    async def close(self) -> None:
        """Stop listening and cut every piped connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.upstream is not None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
                self._tasks.discard(pipe)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
