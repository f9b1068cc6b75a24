"""Run the ledgerflow pipeline as separate OS processes, for fault tests (kill -9, restarts, outages).

Every service is ``sys.executable -m ledgerflow.app.cli <command>`` started with :class:`subprocess.Popen`:

* one QuickBooks sandbox per ERP connection (``ledgerflow sandbox quickbooks --port N``), each
  its own process, so each connection has an ERP that can fail on its own;
* the ingress (``ledgerflow ingress --port N``);
* the transformer (``ledgerflow transformer``);
* one connector per connection (``ledgerflow connector --connection NAME``).

They share the broker (``LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS``), a topic prefix unique to the
pipeline (``LEDGERFLOW_TOPIC_PREFIX``), one state store (``LEDGERFLOW_STATE_URL``: PostgreSQL,
because the transformer and every connector write to it at once) and a routing file written
here: one tenant with a Mercoa token, routed to every connection; each connection points at its
sandbox with the credentials the sandbox accepts (``sandbox_connection``) and raised rate limits.
Every worker gets its own ``LEDGERFLOW_METRICS_PORT``; readiness is each process's ``/readyz``
(sandboxes: ``GET /_sandbox/faults``).

Usage::

    async with Pipeline.start(config) as pipe:
        await pipe.post_mercoa(body)            # → (status, event id)
        pipe.kill9("transformer")               # SIGKILL, reaped
        await pipe.restart("transformer")       # same command, env and ports; waits for /readyz
        results = await pipe.read_topic(pipe.topics.results)

Logs of every process go to ``<workdir>/<service>.log`` (appended across restarts); a service
that dies before it is ready raises :class:`ServiceFailedError` with the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from ledgerflow.connectors.quickbooks.sandbox import DEFAULT_CREDENTIALS, TOKEN_PATH
from ledgerflow.contracts.topics import Topics
from ledgerflow.core.kafka import ensure_topics
from ledgerflow.core.state import StateStore

__all__ = ["ConsumedMessage", "Pipeline", "PipelineConfig", "Service", "ServiceFailedError", "free_port"]

MERCOA_TOKEN = "faults-mercoa-token"


class ServiceFailedError(RuntimeError):
    """A pipeline process exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """One pipeline process: its command line, environment, readiness URL and log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    base_url: str
    ready_path: str
    log_path: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = None

    @property
    def ready_url(self) -> str:
        """Where readiness is polled: ``/readyz`` of workers and the ingress, the control API of sandboxes."""
        return self.base_url + self.ready_path

    def spawn(self) -> None:
        """Start the process (it must not be running)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start #{self.starts + 1} of {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT)
        self.starts += 1

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """``kill -9`` the process and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after ``timeout`` seconds; reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the service's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def wait_ready(self, http: httpx.AsyncClient, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Poll :attr:`ready_url` until it answers 200.

        Raises:
            ServiceFailedError: the process exited, or was not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise ServiceFailedError(
                    f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                response = await http.get(self.ready_url, timeout=3.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.2)
        raise ServiceFailedError(f"{self.name} not ready after {timeout:g}s ({last}):\n{self.log_tail()}")


@dataclass(frozen=True)
class PipelineConfig:
    """What to run.

    Args:
        bootstrap_servers: the broker (``kafka_bootstrap`` fixture).
        embedded: the broker is the embedded Tansu one (producer idempotence off).
        state_url: SQLAlchemy async URL shared by every process (``postgres_url`` fixture).
        workdir: folder for the routing file and the logs.
        prefix: topic prefix (unique per pipeline).
        connections: ERP connection names; each gets its own QuickBooks sandbox process.
        tenant: the tenant routed to every connection.
        partitions: partitions of the pipeline's topics.
        connector_options: extra ``options`` of every connection (rate limits are raised already).
    """

    bootstrap_servers: str
    embedded: bool
    state_url: str
    workdir: Path
    prefix: str
    connections: Sequence[str] = ("qbo-a", "qbo-b")
    tenant: str = "faults"
    partitions: int = 3
    connector_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsumedMessage:
    """One message read back from a topic: coordinates, key, value and headers (as text)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]


class Pipeline:
    """The running processes of one pipeline; build it with :meth:`start`."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.topics = Topics(config.prefix)
        self.services: dict[str, Service] = {}
        self.sandbox_urls: dict[str, str] = {}
        self.ingress_url = ""
        self.ready_seconds: dict[str, float] = {}
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, config: PipelineConfig) -> AsyncIterator[Pipeline]:
        """Create the topics and state tables, start every process, wait until all are ready; stop all on exit.

        Raises:
            ServiceFailedError: a process died or never became ready.
            aiokafka.errors.KafkaError: the topics could not be created.
        """
        pipe = cls(config)
        try:
            await pipe._prepare()
            for name in pipe._start_order():
                pipe.services[name].spawn()
            for name in pipe._start_order():
                began = time.monotonic()
                await pipe.services[name].wait_ready(pipe.http)
                pipe.ready_seconds[name] = time.monotonic() - began
            yield pipe
        finally:
            for name in reversed(pipe._start_order()):
                if name in pipe.services:
                    pipe.services[name].stop()
            await pipe.http.aclose()

    def _start_order(self) -> list[str]:
        sandboxes = [f"sandbox-{c}" for c in self.config.connections]
        return [*sandboxes, "ingress", "transformer", *(f"connector-{c}" for c in self.config.connections)]

    async def _prepare(self) -> None:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        await ensure_topics(cfg.bootstrap_servers, self.topics.all(), partitions=cfg.partitions)
        # Tables first, from one process: several processes racing on CREATE TABLE can collide.
        state = StateStore(cfg.state_url)
        try:
            await state.create_all()
        finally:
            await state.close()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERFLOW_")}
        base_env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap_servers,
                "LEDGERFLOW_KAFKA_ENABLE_IDEMPOTENCE": "false" if cfg.embedded else "true",
                "LEDGERFLOW_TOPIC_PREFIX": cfg.prefix,
                "LEDGERFLOW_TOPIC_PARTITIONS": str(cfg.partitions),
                "LEDGERFLOW_STATE_URL": cfg.state_url,
                "LEDGERFLOW_ROUTING_FILE": str(cfg.workdir / "routing.yaml"),
                "LEDGERFLOW_LOG_LEVEL": "WARNING",
            }
        )
        cli = [sys.executable, "-m", "ledgerflow.app.cli"]
        for connection in cfg.connections:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            self.sandbox_urls[connection] = url
            self._add(
                f"sandbox-{connection}",
                [*cli, "sandbox", "quickbooks", "--port", str(port)],
                base_env,
                url,
                "/_sandbox/faults",
            )
        self._write_routing()
        ingress_port = free_port()
        self.ingress_url = f"http://127.0.0.1:{ingress_port}"
        self._add(
            "ingress",
            [*cli, "ingress", "--port", str(ingress_port)],
            {**base_env, "LEDGERFLOW_INGRESS_HOST": "127.0.0.1"},
            self.ingress_url,
            "/readyz",
        )
        for name, argv in [("transformer", [*cli, "transformer"])] + [
            (f"connector-{c}", [*cli, "connector", "--connection", c]) for c in cfg.connections
        ]:
            port = free_port()
            self._add(
                name, argv, {**base_env, "LEDGERFLOW_METRICS_PORT": str(port)}, f"http://127.0.0.1:{port}", "/readyz"
            )

    def _add(self, name: str, argv: list[str], env: dict[str, str], base_url: str, ready_path: str) -> None:
        cfg = self.config
        self.services[name] = Service(
            name=name,
            argv=argv,
            env=env,
            base_url=base_url,
            ready_path=ready_path,
            log_path=cfg.workdir / f"{name}.log",
            cwd=cfg.workdir,
        )

    def _write_routing(self) -> None:
        cfg = self.config
        creds = DEFAULT_CREDENTIALS
        connections = {
            name: {
                "erp": "quickbooks",
                "base_url": self.sandbox_urls[name],
                "objects": ["bill", "vendor"],
                "credentials": {
                    "client_id": creds.client_id,
                    "client_secret": creds.client_secret,
                    "refresh_token": creds.refresh_token,
                    "realm_id": creds.realm_id,
                    "token_url": self.sandbox_urls[name] + TOKEN_PATH,
                },
                "options": {"rate_limit_per_minute": 600_000, "max_concurrency": 16, **cfg.connector_options},
            }
            for name in cfg.connections
        }
        routing = {
            "tenants": {
                cfg.tenant: {"sources": {"mercoa": {"tokens": [MERCOA_TOKEN]}}, "connections": list(cfg.connections)}
            },
            "connections": connections,
        }
        (cfg.workdir / "routing.yaml").write_text(yaml.safe_dump(routing, sort_keys=False), encoding="utf-8")

    # ------------------------------------------------------------------ faults

    def kill9(self, name: str) -> None:
        """``kill -9`` the service ``name`` (no shutdown, no offset commit, no flush)."""
        self.services[name].kill9()

    async def restart(self, name: str, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Start ``name`` again with the same command, env and ports, and wait until it is ready.

        Raises:
            ServiceFailedError: it died or was not ready within ``timeout`` seconds.
        """
        service = self.services[name]
        service.spawn()
        await service.wait_ready(self.http, timeout)

    async def metric_total(self, name: str, sample: str, **labels: str) -> float:
        """Sum of the samples named ``sample`` (with ``labels``, if given) on ``/metrics`` of service ``name``.

        0 when absent or the service is unreachable.

        Counters live in the process: after a restart they start again from zero.
        """
        try:
            response = await self.http.get(f"{self.services[name].base_url}/metrics", timeout=3.0)
        except httpx.HTTPError:
            return 0.0
        if response.status_code != 200:
            return 0.0
        return sum(
            s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def assert_alive(self) -> None:
        """Raise :class:`ServiceFailedError` if any service exited on its own."""
        for service in self.services.values():
            if not service.running:
                code = service.proc.returncode if service.proc else None
                raise ServiceFailedError(f"{service.name} exited with {code}:\n{service.log_tail()}")

    async def arm_fault(self, connection: str, **spec: Any) -> None:
        """Arm a fault on ``connection``'s sandbox (``POST /_sandbox/faults``, see ``connectors/sandbox_kit.py``)."""
        response = await self.http.post(f"{self.sandbox_urls[connection]}/_sandbox/faults", json=spec)
        response.raise_for_status()

    async def clear_faults(self, connection: str) -> None:
        """Disarm every fault on ``connection``'s sandbox."""
        response = await self.http.delete(f"{self.sandbox_urls[connection]}/_sandbox/faults")
        response.raise_for_status()

    # ------------------------------------------------------------------ traffic and read-back

    async def post_mercoa(self, body: bytes, client: httpx.AsyncClient | None = None) -> tuple[int, str | None]:
        """POST one Mercoa webhook to the ingress; return (status, event id when 200, Mercoa's success status)."""
        http = client or self.http
        response = await http.post(
            f"{self.ingress_url}/webhooks/{self.config.tenant}/mercoa",
            content=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {MERCOA_TOKEN}"},
        )
        event_id = response.json().get("event_id") if response.status_code == 200 else None
        return response.status_code, event_id

    async def sandbox_bills(self, connection: str) -> list[dict[str, Any]]:
        """Every bill stored by ``connection``'s sandbox (``GET /_sandbox/records?kind=bill``)."""
        response = await self.http.get(f"{self.sandbox_urls[connection]}/_sandbox/records", params={"kind": "bill"})
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    async def read_topic(self, topic: str) -> list[ConsumedMessage]:
        """Every message on ``topic`` from the beginning up to its current end (no consumer group)."""
        return await read_topics(self.config.bootstrap_servers, [topic])


async def read_topics(bootstrap_servers: str, topics: Iterable[str]) -> list[ConsumedMessage]:
    """Every message on ``topics`` from the beginning until the topics are drained (no consumer group).

    Drained means: past the end offsets reported at the start of the read *and* one fetch that
    returned nothing. The end offsets alone are not trusted: the embedded Tansu broker reports a
    log end below its last record batch (consumer groups commit offsets beyond it), so a read
    that stops there misses the newest messages.

    Raises:
        TimeoutError: not drained within 30 seconds.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions: list[TopicPartition] = []
        for topic in topics:
            partitions += await _partitions(consumer, topic)
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[ConsumedMessage] = []
        async with asyncio.timeout(30):
            while True:
                batch = await consumer.getmany(timeout_ms=300, max_records=5000)
                for tp, records in batch.items():
                    for r in records:
                        headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                        out.append(ConsumedMessage(tp.topic, tp.partition, r.offset, r.key, r.value or b"", headers))
                if not batch and not [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                    return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (refreshing the consumer's metadata once if it does not know the topic)."""
    ids = consumer.partitions_for_topic(topic)
    if ids is None:
        await consumer._client.force_metadata_update()
        ids = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(ids or ())]
