"""A real Prometheus server scrapes a running pipeline during demo traffic; PromQL sees the series."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from ledgerflow.app import demo
from ledgerflow.app.stack import run_stack
from ledgerflow.core.embedded import free_port
from ledgerflow.core.settings import Settings, demo_routing

pytestmark = pytest.mark.kafka

PROMETHEUS = shutil.which("prometheus")


async def _query(client: httpx.AsyncClient, base: str, promql: str) -> list[dict[str, Any]]:
    resp = await client.get(f"{base}/api/v1/query", params={"query": promql})
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def _value(client: httpx.AsyncClient, base: str, promql: str) -> float:
    result = await _query(client, base, promql)
    return sum(float(r["value"][1]) for r in result)


def _local_counts() -> dict[str, float]:
    """This process's counter values now (what Prometheus will see before the test's traffic)."""

    def total(name: str, **labels: str) -> float:
        found = 0.0
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found += sample.value
        return found

    results = "ledgerflow_connector_results_total"
    return {
        "accepted": total("ledgerflow_webhooks_received_total", tenant="demo", source="mercoa", outcome="accepted"),
        "unauthorized": total("ledgerflow_webhooks_received_total", tenant="demo", outcome="unauthorized"),
        "succeeded": total(results, tenant="demo", object="bill", outcome="succeeded"),
        "quickbooks": total(results, tenant="demo", object="bill", outcome="succeeded", erp="quickbooks"),
        "xero": total(results, tenant="demo", object="bill", outcome="succeeded", erp="xero"),
        "latency": total("ledgerflow_end_to_end_latency_seconds_count"),
        "erp_2xx": total("ledgerflow_erp_requests_total", status="2xx"),
    }


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")
async def test_prometheus_scrapes_webhook_result_and_latency_series(
    kafka_bootstrap: str, kafka_is_embedded: bool, tmp_path: Path, mercoa_sample: bytes, unique: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=not kafka_is_embedded,
        topic_prefix=f"prom{unique}",
        topic_partitions=2,
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
    )
    invoices = 5
    async with run_stack(settings, demo_routing()) as stack:
        target = stack.ingress_url.removeprefix("http://")
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ledgerflow\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        assert PROMETHEUS is not None
        proc = subprocess.Popen(  # noqa: ASYNC220 - fixed binary, started once
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                for _ in range(100):
                    try:
                        if (await client.get(f"{base}/-/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
                # Counters are process-wide and other tests in this process count too: compare deltas.
                before = _local_counts()
                payload = orjson.loads(mercoa_sample)
                for n in range(invoices):
                    payload["invoice"]["id"] = f"in_prom-{unique}-{n}"
                    await demo.post_webhook(stack, orjson.dumps(payload))
                bad = await client.post(
                    f"{stack.ingress_url}/webhooks/demo/mercoa",
                    content=b"{}",
                    headers={"content-type": "application/json", "authorization": "Bearer wrong"},
                )
                assert bad.status_code == 401

                accepted = 'ledgerflow_webhooks_received_total{tenant="demo",source="mercoa",outcome="accepted"}'
                succeeded = 'ledgerflow_connector_results_total{tenant="demo",object="bill",outcome="succeeded"}'
                latency = "ledgerflow_end_to_end_latency_seconds_count"
                for _ in range(150):
                    if (
                        await _value(client, base, accepted) >= before["accepted"] + invoices
                        and await _value(client, base, succeeded) >= before["succeeded"] + 2 * invoices
                        and await _value(client, base, latency) >= before["latency"] + 2 * invoices
                    ):
                        break
                    await asyncio.sleep(0.2)
                assert await _value(client, base, accepted) == before["accepted"] + invoices
                unauthorized = 'ledgerflow_webhooks_received_total{tenant="demo",outcome="unauthorized"}'
                assert await _value(client, base, unauthorized) == before["unauthorized"] + 1
                by_erp = await _query(client, base, f"sum by (erp) ({succeeded})")
                assert {
                    r["metric"]["erp"]: float(r["value"][1])
                    for r in by_erp
                    if r["metric"]["erp"] in {"quickbooks", "xero"}
                } == {
                    "quickbooks": before["quickbooks"] + invoices,
                    "xero": before["xero"] + invoices,
                }
                p99 = await _value(
                    client,
                    base,
                    "histogram_quantile(0.99, sum by (le) (ledgerflow_end_to_end_latency_seconds_bucket))",
                )
                assert 0 < p99 < 30
                erp_requests = await _value(client, base, 'ledgerflow_erp_requests_total{status="2xx"}')
                assert erp_requests >= before["erp_2xx"] + 2 * invoices
                assert await _value(client, base, 'ledgerflow_build_info{version!=""}') == 1
        finally:
            proc.terminate()
            proc.wait(10)
