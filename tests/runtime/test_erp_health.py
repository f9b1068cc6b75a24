"""ERP health is a metric from a periodic check, never a readiness call to the ERP."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from ledgerflow.connectors.main import erp_health_probe


class CheckedConnector:
    """Stands in for a Connector: only ``name``, ``erp`` and ``check()`` are used by the probe."""

    name = "xero-health"
    erp = "xero"

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def check(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("401 invalid_grant: the refresh token was revoked")


def _up() -> float | None:
    return REGISTRY.get_sample_value("ledgerflow_erp_up", {"connection": "xero-health", "erp": "xero"})


async def test_the_probe_sets_the_gauge_and_follows_the_erp() -> None:
    connector = CheckedConnector()
    async with erp_health_probe(connector, interval=0.02):  # type: ignore[arg-type]
        for _ in range(100):
            if _up() == 1:
                break
            await asyncio.sleep(0.01)
        assert _up() == 1
        connector.fail = True
        for _ in range(100):
            if _up() == 0:
                break
            await asyncio.sleep(0.01)
        assert _up() == 0
    calls = connector.calls
    await asyncio.sleep(0.1)
    assert connector.calls == calls, "the probe stops with the block"
    assert REGISTRY.get_sample_value(
        "ledgerflow_erp_check_timestamp_seconds", {"connection": "xero-health", "erp": "xero"}
    )


async def test_interval_zero_never_calls_the_erp() -> None:
    connector = CheckedConnector()
    async with erp_health_probe(connector, interval=0):  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
    assert connector.calls == 0
