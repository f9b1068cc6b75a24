"""Load-generation helpers for the benchmarks: a closed-loop HTTP/1.1 keep-alive load generator.

The generator speaks just enough HTTP/1.1 over asyncio streams (uvloop when installed) to drive a
server at tens of thousands of requests per second from one core, far more than httpx can; it
runs in its own OS processes so it never shares an event loop with the server under test.

:func:`run_load` starts ``processes`` workers, each holding ``connections // processes`` keep-alive
connections; every connection sends the next prepared request as soon as the previous response
arrived (closed loop), for ``duration`` seconds after a ``warmup``. It returns the status counts
and the latency of every measured request.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadResult", "build_request", "percentile", "run_load"]

ACCEPTED = frozenset({200, 202})
"""Success statuses of the ingress: 200 where the vendor documents it (Mercoa, Monite), else 202."""


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request with ``Content-Length``."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ascending ``sorted_values`` (nearest rank); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[idx]


@dataclass
class LoadResult:
    """What a load run measured.

    ``statuses``: HTTP status → count (0 = connection error), measured window only; ``latencies``:
    seconds, ascending, measured requests only; ``seconds``: the measured window.
    """

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    accepted_total: int = 0
    """Every 202, warm-up included (to compare with what the broker holds)."""

    def rate(self, status: int | None = None) -> float:
        """Responses with ``status`` per second (None: every success status, :data:`ACCEPTED`)."""
        count = sum(self.statuses[s] for s in ACCEPTED) if status is None else self.statuses[status]
        return count / self.seconds if self.seconds else 0.0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response (head and ``Content-Length`` body); return its status and head.

    Raises:
        asyncio.IncompleteReadError, ValueError: the server closed early or sent no valid head.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return int(head[9:12]), head


async def _connection(
    host: str, port: int, requests: list[bytes], start_at: float, stop_at: float, out: dict[str, Any], offset: int
) -> None:
    statuses: Counter[int] = out["statuses"]
    latencies: list[float] = out["latencies"]
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            writer.write(requests[i % len(requests)])
            i += 1
            status, head = await read_response(reader)
            if status in ACCEPTED:
                out["accepted"] += 1
            if now >= start_at:
                statuses[status] += 1
                latencies.append(time.perf_counter() - now)
            if b"connection: close" in head.lower():
                return
    except (OSError, asyncio.IncompleteReadError, ValueError):
        statuses[0] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _worker(
    host: str, port: int, requests: list[bytes], connections: int, warmup: float, duration: float, conn: Any, seed: int
) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {"statuses": Counter(), "latencies": [], "accepted": 0}
        start_at = time.perf_counter() + warmup
        stop_at = start_at + duration
        await asyncio.gather(
            *(
                _connection(host, port, requests, start_at, stop_at, out, seed * 7919 + c * 31)
                for c in range(connections)
            )
        )
        return out

    result = asyncio.run(main())
    conn.send((dict(result["statuses"]), result["latencies"], result["accepted"]))
    conn.close()


def run_load(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    connections: int,
    duration: float,
    warmup: float = 1.0,
    processes: int = 1,
) -> LoadResult:
    """Drive ``host:port`` with ``requests`` (cycled) from ``processes`` OS processes; see the module doc."""
    ctx = mp.get_context("spawn")
    pipes = []
    procs = []
    per_proc = max(1, connections // processes)
    for n in range(processes):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker, args=(host, port, requests, per_proc, warmup, duration, child, n), daemon=True
        )
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    result = LoadResult(seconds=duration)
    for parent, proc in zip(pipes, procs, strict=True):
        if parent.poll(warmup + duration + 60):
            statuses, latencies, accepted = parent.recv()
            result.accepted_total += accepted
            result.statuses.update(statuses)
            result.latencies.extend(latencies)
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    result.latencies.sort()
    return result
