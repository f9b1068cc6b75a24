"""Smoke run of the end-to-end benchmark (``python -m bench --smoke``): every section, sane numbers.

Runs the real thing at tiny rates: the embedded broker, both ERP sandboxes, ingress, transformer and
connectors as separate processes. It checks the report, not performance.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.kafka

SECTIONS = (
    "## Machine",
    "## Ingress",
    "## End to end",
    "## Transformers and connectors",
    "## Memory",
    "## CPU",
    "## Scaling",
    "## Targets",
    "## Baselines",
)
"""Headings the report must have (``bench.report.SECTIONS``; bench/ is not an installed package)."""


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--quiet", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    markdown = (out / "latest.md").read_text(encoding="utf-8")
    data = orjson.loads((out / "latest.json").read_bytes())
    return markdown, data, proc.stdout


def test_report_has_every_section_and_is_printed(smoke_report: tuple[str, dict[str, Any], str]) -> None:
    markdown, _, stdout = smoke_report
    missing = [heading for heading in SECTIONS if heading not in markdown]
    assert not missing
    assert "## Targets" in stdout


def test_machine_is_described(smoke_report: tuple[str, dict[str, Any], str]) -> None:
    machine = smoke_report[1]["machine"]
    assert machine["logical_cores"] >= 1
    assert machine["ram_gib"] > 0
    assert machine["python"].startswith("3.")
    assert machine["cpu_model"]


def test_ingress_figures_are_sane(smoke_report: tuple[str, dict[str, Any], str]) -> None:
    ingress = smoke_report[1]["ingress"]
    for payload in ("mercoa", "ingenious"):
        for system in ("ledgerflow", "baseline"):
            for mode in ("saturation", "fixed-rate"):
                run = ingress[payload][system][mode]
                assert run["accepted"] > 0, (payload, system, mode)
                assert run["failed"] == 0, (payload, system, mode)
                assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"] < 30_000
    assert 10 < ingress["peak_rss_mb"]["ledgerflow"] < 1024


def test_every_event_is_booked_in_both_erps(smoke_report: tuple[str, dict[str, Any], str]) -> None:
    data = smoke_report[1]
    low = data["e2e"]["fixed_low"]
    assert low["load"]["accepted"] > 0
    assert low["results"] == low["expected_results"] == 2 * low["load"]["accepted"]
    assert low["outcomes"] == {"succeeded": low["results"]}
    assert 0 < low["latency_ms"]["p50"] <= low["latency_ms"]["p99"] < 60_000
    assert data["e2e"]["saturation"]["events_per_s"] > 0
    assert data["naive"][str(int(low["target_rate"]))]["delivered"] > 0


def test_processes_costs_and_scaling_are_measured(smoke_report: tuple[str, dict[str, Any], str]) -> None:
    data = smoke_report[1]
    rss = data["memory_peak_rss_mb"]
    for name in ("ingress", "transformer-1", "transformer-2"):
        assert 10 < rss[name] < 1024
    assert sum(1 for name in rss if name.startswith("connector-")) == 3
    per_process = data["e2e"]["saturation"]["per_process"]
    assert per_process["transformer-1"]["events"] > 0
    assert all(p["cpu_s_per_1000"] is None or p["cpu_s_per_1000"] > 0 for p in per_process.values())
    scaling = data["scaling"]
    assert scaling["scaled"]["events_per_s"] > 0
    assert scaling["gain"] > 0
    micro = data["transformer_micro"]
    assert micro["ledgerflow_events_per_s"] > 0
    assert micro["baseline_events_per_s"] > 0
    names = [t["target"] for t in data["targets"]]
    assert "peak RSS per worker" in names
    assert any(n.startswith("ingress at saturation") for n in names)
    assert sum(1 for n in names if n.startswith("transformer per CPU-second")) == 2
    cpu = next(t for t in data["targets"] if t["target"].startswith("CPU per webhook"))
    assert cpu["ratio"] is not None, "ingress, transformer and connectors CPU summed"
    assert cpu["ratio"] > 0
    assert all(t["met"] is None for t in data["targets"] if t["target"] != "peak RSS per worker"), "smoke: no verdict"


def test_transformer_through_the_broker_is_measured_beside_its_baseline(
    smoke_report: tuple[str, dict[str, Any], str],
) -> None:
    markdown, data, _ = smoke_report
    through = data["transformer"]
    assert set(through) == {"mercoa", "ingenious"}
    for workload, contenders in through.items():
        assert set(contenders) == {"ledgerflow", "baseline"}
        for contender, figures in contenders.items():
            assert figures["outputs"] == figures["events"] > 0, (workload, contender)
            assert figures["events_per_cpu_s"] > 0, (workload, contender)
    assert "Transformer through the broker" in markdown
