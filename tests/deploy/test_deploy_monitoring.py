"""Alert rules and the Grafana dashboard: valid PromQL, and only metrics the code exports.

``promtool`` (Debian package ``prometheus``) checks and unit-tests the rules; the tests skip
with a clear reason without it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import ledgerflow.core.metrics
from tests.deploy.conftest import DEPLOY, Resource, of_kind, one

DASHBOARD = DEPLOY / "base" / "monitoring" / "ledgerflow-dashboard.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}
# Labels Prometheus adds to every scraped series (target labels), not the code.
TARGET_LABELS = {"namespace", "pod", "container", "job", "instance", "service", "endpoint", "le"}


def _series(metric: MetricWrapperBase) -> dict[str, set[str]]:
    """Sample names a metric exposes → its label names."""
    labels = set(metric._labelnames)
    names: dict[str, set[str]] = {}
    for family in metric.describe():
        suffixes = SUFFIXES.get(family.type, ("",))
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def known_series() -> dict[str, set[str]]:
    """Every series name ledgerflow/metrics.py and FastStream's Prometheus middleware export."""
    from faststream.prometheus.container import MetricsContainer

    known: dict[str, set[str]] = {}
    for value in vars(ledgerflow.core.metrics).values():
        if isinstance(value, MetricWrapperBase):
            known.update(_series(value))
    container = MetricsContainer(CollectorRegistry(), custom_label_names=[])
    for slot in type(container).__slots__:
        value = getattr(container, slot)
        if isinstance(value, MetricWrapperBase):
            known.update(_series(value))
    return known


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"\b((?:ledgerflow|faststream)_[a-zA-Z0-9_]*)(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def used_series(expr: str) -> dict[str, set[str]]:
    """Metric names in a PromQL expression → label names its selectors match on."""
    found: dict[str, set[str]] = {}
    for match in _SELECTOR.finditer(expr):
        name, selector = match.group(1), match.group(2) or ""
        found.setdefault(name, set()).update(_MATCHER.findall(selector))
    return found


def _check_expr(expr: str, known: dict[str, set[str]], where: str) -> list[str]:
    errors = []
    used = used_series(expr)
    if not used:
        errors.append(f"{where}: no ledgerflow or FastStream metric in {expr!r}")
    for name, labels in used.items():
        if name not in known:
            errors.append(f"{where}: unknown metric {name}")
            continue
        unknown = labels - known[name] - TARGET_LABELS
        if unknown:
            errors.append(f"{where}: {name} has no label {sorted(unknown)}")
    # Every label an aggregation groups by must exist on at least one metric of the expression.
    available = set().union(*(known.get(n, set()) for n in used)) | TARGET_LABELS
    for group in _GROUPING.findall(_STRING.sub('""', expr)):
        missing = {g.strip() for g in group.split(",") if g.strip()} - available
        if missing:
            errors.append(f"{where}: groups by unknown label {sorted(missing)}")
    return errors


def _rules(docs: list[Resource]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "PrometheusRule", "ledgerflow")["spec"]
    return spec


def _alerts(docs: list[Resource]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _rules(docs)["groups"] for r in g["rules"] if "alert" in r}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: `apt-get install -y --no-install-recommends prometheus` ships it")
    return path


def test_known_series_come_from_the_code() -> None:
    known = known_series()
    assert "ledgerflow_webhooks_received_total" in known
    assert "ledgerflow_end_to_end_latency_seconds_bucket" in known
    assert "faststream_received_processed_messages_total" in known
    assert known["ledgerflow_connector_results_total"] >= {"connection", "outcome"}
    # The checker itself must reject what does not exist.
    assert _check_expr('rate(ledgerflow_webhooks_total{source="x"}[5m])', known, "t")
    assert _check_expr('rate(ledgerflow_webhooks_received_total{conection="x"}[5m])', known, "t")
    assert _check_expr("sum by (tenantt) (rate(ledgerflow_webhooks_received_total[5m]))", known, "t")
    assert not _check_expr('sum by (source) (rate(ledgerflow_webhooks_received_total{outcome="x"}[5m]))', known, "t")


def test_alert_metrics_exist(prod: list[Resource]) -> None:
    known = known_series()
    errors = [e for name, rule in _alerts(prod).items() for e in _check_expr(str(rule["expr"]), known, name)]
    assert not errors, "\n".join(errors)


def test_alerts_cover_what_matters(prod: list[Resource]) -> None:
    used: dict[str, set[str]] = {}
    for rule in _alerts(prod).values():
        for name, labels in used_series(str(rule["expr"])).items():
            used.setdefault(name, set()).update(labels)
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
    assert "ledgerflow_dlq_messages_total" in used
    assert "outcome" in used["ledgerflow_connector_results_total"]
    assert "ledgerflow_consumer_lag_messages" in used
    assert "ledgerflow_end_to_end_latency_seconds_bucket" in used
    assert "outcome" in used["ledgerflow_webhooks_received_total"]
    assert "result" in used["ledgerflow_readback_total"]


def test_promtool_checks_the_rules(prod: list[Resource], tmp_path: Path) -> None:
    promtool = _promtool()
    rules = tmp_path / "ledgerflow.rules.yaml"
    rules.write_text(yaml.safe_dump(_rules(prod)))
    proc = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts(prod))} rules found" in proc.stdout


def _webhooks(source: str, outcome: str) -> str:
    return f'ledgerflow_webhooks_received_total{{tenant="acme",source="{source}",object="bill",outcome="{outcome}"}}'


def _results(erp: str, connection: str, outcome: str) -> str:
    labels = f'tenant="acme",object="bill",erp="{erp}",connection="{connection}",outcome="{outcome}"'
    return f"ledgerflow_connector_results_total{{{labels}}}"


def _read_back(erp: str, connection: str, result: str) -> str:
    labels = f'tenant="acme",object="bill",erp="{erp}",connection="{connection}",result="{result}"'
    return f"ledgerflow_readback_total{{{labels}}}"


def _lag(group: str, topic: str, pod: str) -> str:
    return f'ledgerflow_consumer_lag_messages{{group="{group}",topic="{topic}",pod="{pod}"}}'


# promtool unit tests: synthetic series in, the alerts that must (and must not) fire out.
# Counters are given per minute; `for` durations are honoured, so evaluation times sit past them.
RULE_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'ledgerflow_dlq_messages_total{stage="connector",reason="validation"}',
                "values": "0 0 1 2 3 4 5 6 7 8 9 10 11 12",
            },
            {
                "series": _webhooks("mercoa", "accepted"),
                "values": "0+10x60",
            },
            {
                "series": _webhooks("mercoa", "unavailable"),
                "values": "0+0x60",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "12m",
                "alertname": "LedgerflowDeadLettersGrowing",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", "stage": "connector", "reason": "validation"},
                        "exp_annotations": {
                            "summary": "11 messages dead-lettered at stage connector (validation)",
                            "description": (
                                "Inspect ledgerflow.dlq.connector, fix the cause, then replay with `ledgerflow replay`."
                            ),
                        },
                    }
                ],
            },
            # Webhooks accepted for an hour, no SyncResult at all: the pipeline is stuck.
            {
                "eval_time": "50m",
                "alertname": "LedgerflowNoResultsWhileWebhooksArrive",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical"},
                        "exp_annotations": {"summary": "Webhooks accepted for 30 minutes but no SyncResult written"},
                    }
                ],
            },
            {"eval_time": "50m", "alertname": "LedgerflowIngressUnavailable", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": _webhooks("monite", "accepted"),
                "values": "0+10x60",
            },
            {
                "series": _webhooks("monite", "unavailable"),
                "values": "0+1x60",
            },
            {
                "series": _results("xero", "xero-main", "succeeded"),
                "values": "0+8x60",
            },
            {
                "series": _results("xero", "xero-main", "failed"),
                "values": "0+2x60",
            },
            {
                "series": _results("quickbooks", "quickbooks-main", "succeeded"),
                "values": "0+10x60",
            },
            {
                "series": _read_back("xero", "xero-main", "mismatched"),
                "values": "0x20 1x40",
            },
            {
                "series": _read_back("quickbooks", "quickbooks-main", "matched"),
                "values": "0+10x60",
            },
            {
                "series": 'ledgerflow_erp_up{connection="xero-main",erp="xero",pod="c-1"}',
                "values": "1x10 0x50",
            },
            {
                "series": 'ledgerflow_erp_up{connection="quickbooks-main",erp="quickbooks",pod="c-2"}',
                "values": "1x60",
            },
            {
                "series": _read_back("quickbooks", "quickbooks-main", "mismatched"),
                "values": "0x60",
            },
            {
                "series": _lag("ledgerflow.connector.xero-main", "ledgerflow.bill.v1", "a"),
                "values": "5000x60",
            },
            {
                "series": _lag("ledgerflow.connector.xero-main", "ledgerflow.bill.v1", "b"),
                "values": "5000x60",
            },
            {
                "series": _lag("ledgerflow.transformer", "ledgerflow.raw.monite", "c"),
                "values": "10x60",
            },
        ],
        "alert_rule_test": [
            # Results flow: the stuck-pipeline alert stays quiet.
            {"eval_time": "50m", "alertname": "LedgerflowNoResultsWhileWebhooksArrive", "exp_alerts": []},
            # 1 in 11 webhooks gets a 503.
            {
                "eval_time": "30m",
                "alertname": "LedgerflowIngressUnavailable",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical"},
                        "exp_annotations": {"summary": "ledgerflow ingress answers 503 to 9.091% of webhooks"},
                    }
                ],
            },
            # 20 % of xero-main fails, quickbooks-main is clean.
            {
                "eval_time": "30m",
                "alertname": "LedgerflowERPFailureRatioHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical", "erp": "xero", "connection": "xero-main"},
                        "exp_annotations": {"summary": "20% of records to xero-main (xero) fail"},
                    }
                ],
            },
            # One xero-main bill read back different from its source: critical at once; quickbooks-main is clean.
            {
                "eval_time": "30m",
                "alertname": "LedgerflowERPRecordMismatch",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "erp": "xero",
                            "connection": "xero-main",
                            "object": "bill",
                        },
                        "exp_annotations": {
                            "summary": "bill records in xero-main (xero) differ from their source documents"
                        },
                    }
                ],
            },
            # xero-main's check has failed since minute 10: the alert fires after 10 more minutes.
            {
                "eval_time": "30m",
                "alertname": "LedgerflowERPDown",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical", "erp": "xero", "connection": "xero-main"},
                        "exp_annotations": {"summary": "xero-main cannot reach or authenticate with xero"},
                    }
                ],
            },
            # Two pods report the same partition lag: counted once, only the lagging group alerts.
            {
                "eval_time": "30m",
                "alertname": "LedgerflowConsumerLagHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", "group": "ledgerflow.connector.xero-main"},
                        "exp_annotations": {
                            "summary": "Consumer group ledgerflow.connector.xero-main is 5000 messages behind"
                        },
                    }
                ],
            },
        ],
    },
    # One connection's reference sync stopped at t=0, the other's completes every minute: only the
    # stopped one alerts, once it has been stale for three hours and fifteen minutes of "for".
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'ledgerflow_reference_sync_last_success_timestamp_seconds{connection="xero-main",pod="s"}',
                "values": "0x300",
            },
            {
                "series": 'ledgerflow_reference_sync_last_success_timestamp_seconds{connection="qbo-main",pod="s"}',
                "values": "0+60x300",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "190m", "alertname": "LedgerflowReferenceSyncStale", "exp_alerts": []},
            {
                "eval_time": "240m",
                "alertname": "LedgerflowReferenceSyncStale",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", "connection": "xero-main"},
                        "exp_annotations": {
                            "summary": "No reference sync of xero-main has succeeded for 4h 0m 0s",
                            "description": (
                                "GET /v1/connections/xero-main/reference-sync lists the last runs with their "
                                "errors (credentials, ERP outage, rate limit). Fix the cause; POST to the same "
                                "path runs a pass at once."
                            ),
                        },
                    }
                ],
            },
        ],
    },
]


def test_promtool_unit_tests_the_alerts(prod: list[Resource], tmp_path: Path) -> None:
    promtool = _promtool()
    (tmp_path / "ledgerflow.rules.yaml").write_text(yaml.safe_dump(_rules(prod)))
    alerts = _alerts(prod)
    cases = copy.deepcopy(RULE_TESTS)
    for case in cases:
        for check in case["alert_rule_test"]:
            for expected in check["exp_alerts"]:
                # Descriptions without templates are compared as written in the rule.
                expected["exp_annotations"].setdefault(
                    "description", alerts[check["alertname"]]["annotations"]["description"]
                )
    tests = tmp_path / "ledgerflow.rules.test.yaml"
    tests.write_text(
        yaml.safe_dump({"rule_files": ["ledgerflow.rules.yaml"], "evaluation_interval": "1m", "tests": cases})
    )
    proc = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_dashboard_metrics_exist() -> None:
    known = known_series()
    errors = [e for title, expr in _targets(_dashboard()) for e in _check_expr(expr, known, title)]
    assert not errors, "\n".join(errors)


def test_dashboard_shows_what_matters() -> None:
    dashboard = _dashboard()
    used: dict[str, set[str]] = {}
    for _, expr in _targets(dashboard):
        for name, labels in used_series(expr).items():
            used.setdefault(name, set()).update(labels)
    exprs = " ".join(e for _, e in _targets(dashboard))
    assert "sum by (source, outcome) (rate(ledgerflow_webhooks_received_total" in exprs
    for name in (
        "ledgerflow_end_to_end_latency_seconds_bucket",
        "ledgerflow_connector_results_total",
        "ledgerflow_erp_request_duration_seconds_bucket",
        "ledgerflow_erp_requests_total",
        "ledgerflow_consumer_lag_messages",
        "ledgerflow_dlq_messages_total",
        "ledgerflow_retries_total",
    ):
        assert name in used, f"dashboard lacks {name}"
    assert "by (le, connection" in exprs, "ERP latency per connection"


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            refs = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            assert refs <= variables, (p["title"], refs - variables)


def test_dashboard_ships_as_a_configmap(resources: list[Resource]) -> None:
    (cm,) = [c for c in of_kind(resources, "ConfigMap") if c["metadata"]["name"] == "ledgerflow-grafana-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["ledgerflow-dashboard.json"]) == _dashboard()


def test_scrape_targets_match_metrics_ports(resources: list[Resource]) -> None:
    sm = one(resources, "ServiceMonitor", "ledgerflow-ingress")
    service = one(resources, "Service", "ledgerflow-ingress")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    pm = one(resources, "PodMonitor", "ledgerflow-workers")
    (expr,) = pm["spec"]["selector"]["matchExpressions"]
    workers = [
        d
        for d in of_kind(resources, "Deployment")
        if d["spec"]["template"]["spec"]["containers"][0]["args"][0] != "ingress"
    ]
    for d in workers:
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert labels[expr["key"]] in expr["values"], d["metadata"]["name"]
        ports = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} & ports, d["metadata"]["name"]
