"""Kafka over TLS and mutual TLS only: topics, the ingress, the workers and the lag metric.

A TLS-terminating proxy (:mod:`tests.tls_proxy`) with a CA made here by ``trustme`` stands in front
of the embedded broker, which advertises the proxy's address, so every client must speak TLS to
reach it. Every Kafka client ledgerflow builds takes its security from
:func:`ledgerflow.core.kafka_security.kafka_client_options`; these tests show each kind working
through the proxy and a client without TLS (or, for mTLS, without a client certificate) refused.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.contracts import Outcome
from ledgerflow.contracts.common import canonical_id
from ledgerflow.core.embedded import EmbeddedBroker
from ledgerflow.core.kafka import ensure_topics, missing_topics
from ledgerflow.core.kafka_security import kafka_client_options
from ledgerflow.core.lag import lag_reporter
from ledgerflow.core.settings import Settings, demo_routing
from tests.lagging import leave_group_behind
from tests.tls_proxy import TlsProxy

trustme = pytest.importorskip("trustme", reason="trustme (dev extra) makes the test CA")

pytestmark = pytest.mark.kafka


@dataclass
class TlsBroker:
    address: str
    ca: Path
    cert: Path | None
    key: Path | None

    def settings(self, tmp_path: Path, prefix: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka_bootstrap_servers": self.address,
            "kafka_enable_idempotence": False,  # the embedded broker rejects InitProducerId
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": self.ca,
            "kafka_ssl_certfile": self.cert,
            "kafka_ssl_keyfile": self.key,
            "topic_prefix": prefix,
            "topic_partitions": 2,
            "state_url": f"sqlite+aiosqlite:///{tmp_path}/state.db",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def env(self, prefix: str) -> dict[str, str]:
        env = {
            **os.environ,
            "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": self.address,
            "LEDGERFLOW_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "LEDGERFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
            "LEDGERFLOW_KAFKA_SSL_CAFILE": str(self.ca),
            "LEDGERFLOW_TOPIC_PREFIX": prefix,
        }
        if self.cert and self.key:
            env |= {"LEDGERFLOW_KAFKA_SSL_CERTFILE": str(self.cert), "LEDGERFLOW_KAFKA_SSL_KEYFILE": str(self.key)}
        return env


@pytest.fixture(params=["tls", "mtls"], scope="module")
async def tls_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TlsBroker]:
    mutual = request.param == "mtls"
    folder = tmp_path_factory.mktemp(request.param)
    ca = trustme.CA()
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    cert_file = key_file = None
    if mutual:
        ca.configure_trust(server_context)
        server_context.verify_mode = ssl.CERT_REQUIRED
        client = ca.issue_cert("ledgerflow-client")
        cert_file, key_file = folder / "client.pem", folder / "client.key"
        client.cert_chain_pems[0].write_to_path(str(cert_file))
        client.private_key_pem.write_to_path(str(key_file))
    proxy = TlsProxy(server_context)
    broker = EmbeddedBroker(advertised=proxy.address, log_path=folder / "broker.log")
    broker.start()
    proxy.upstream = (broker.host, broker.port)
    await proxy.start()
    try:
        yield TlsBroker(proxy.address, ca_file, cert_file, key_file)
    finally:
        await proxy.close()
        broker.stop()


async def test_topics_create_over_tls_and_a_plain_client_is_refused(tls_broker: TlsBroker, unique: str) -> None:
    prefix = f"tls{unique}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ledgerflow",
        "topics",
        "create",
        env=tls_broker.env(prefix),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out + err).decode()
    settings = tls_broker.settings(Path("."), prefix)
    options = kafka_client_options(settings)
    assert await missing_topics(tls_broker.address, settings.topics.all(), client_options=options) == []

    # The same listener without TLS: the client never gets an answer it can read.
    with pytest.raises((KafkaError, TimeoutError, OSError)):
        await missing_topics(tls_broker.address, settings.topics.all(), timeout=2.0)


@pytest.mark.parametrize("tls_broker", ["mtls"], indirect=True)
async def test_mutual_tls_refuses_a_client_without_a_certificate(tls_broker: TlsBroker, tmp_path: Path) -> None:
    assert tls_broker.cert is not None, "the mutual-TLS listener asks for a client certificate"
    settings = tls_broker.settings(tmp_path, "nocert", kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
    with pytest.raises((KafkaError, TimeoutError, OSError)):
        await missing_topics(tls_broker.address, ["any"], timeout=2.0, client_options=kafka_client_options(settings))


async def test_webhook_to_erps_over_tls(tls_broker: TlsBroker, tmp_path: Path, unique: str) -> None:
    """The demo flow: the ingress is ready and answers 200 (Mercoa), the workers consume, both ERPs book."""
    settings = tls_broker.settings(tmp_path, f"tlsdemo{unique}")
    body = demo.load_sample(None)
    payload = orjson.loads(body)
    async with run_stack(settings, demo_routing()) as stack:
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"{stack.ingress_url}/readyz")
        assert ready.status_code == 200, ready.text
        await demo.post_webhook(stack, body)
        canonical = canonical_id("demo", "mercoa", "bill", str(payload["invoice"]["id"]))
        results = await demo.collect_results(
            stack.bootstrap_servers,
            settings.topics.results,
            canonical,
            ["quickbooks", "xero"],
            timeout=90,
            client_options=kafka_client_options(settings),
        )
    assert set(results) == {"quickbooks", "xero"}
    assert {r.outcome for r in results.values()} == {Outcome.SUCCEEDED}


async def test_lag_metric_over_tls(tls_broker: TlsBroker, tmp_path: Path, unique: str) -> None:
    settings = tls_broker.settings(tmp_path, f"tlslag{unique}")
    options = kafka_client_options(settings)
    topic, group = f"tlslag.{unique}", f"tlslag-{unique}"
    await ensure_topics(tls_broker.address, [topic], partitions=1, client_options=options)
    await leave_group_behind(tls_broker.address, topic, group, produced=10, consumed=3, client_options=options)

    value = None
    async with lag_reporter(tls_broker.address, [(group, [topic])], interval=0.2, client_options=options):
        for _ in range(100):
            value = REGISTRY.get_sample_value("ledgerflow_consumer_lag_messages", {"group": group, "topic": topic})
            if value is not None:
                break
            await asyncio.sleep(0.1)
    assert value == 7
