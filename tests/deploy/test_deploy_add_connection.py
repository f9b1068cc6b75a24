"""The documented way to add an ERP connection (docs/deploy.md) works on a copy of deploy/."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.deploy.conftest import DEPLOY, of_kind, render


def test_adding_a_connection_as_documented(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    base = deploy / "base"
    # 1. routing file
    routing_path = base / "app" / "config" / "routing.yaml"
    routing = yaml.safe_load(routing_path.read_text(encoding="utf-8"))
    routing["connections"]["netsuite-eu"] = {
        "erp": "netsuite",
        "base_url": "https://1234567.suitetalk.api.netsuite.com",
    }
    routing["tenants"]["acme"]["connections"].append("netsuite-eu")
    routing_path.write_text(yaml.safe_dump(routing), encoding="utf-8")
    # 2. copy a connection folder and rename it
    shutil.copytree(base / "connections" / "xero-main", base / "connections" / "netsuite-eu")
    kustomization = base / "connections" / "netsuite-eu" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text(encoding="utf-8").replace("xero-main", "netsuite-eu"))
    # 3. list it in the app kustomization
    app = base / "app" / "kustomization.yaml"
    text = app.read_text(encoding="utf-8")
    assert "  - ../connections/xero-main\n" in text
    app.write_text(
        text.replace("  - ../connections/xero-main\n", "  - ../connections/xero-main\n  - ../connections/netsuite-eu\n")
    )

    docs = render(deploy / "overlays" / "prod")
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    new = deployments["ledgerflow-connector-netsuite-eu"]
    assert new["spec"]["template"]["spec"]["containers"][0]["args"] == ["connector", "--connection", "netsuite-eu"]
    assert "ledgerflow-connector-xero-main" in deployments
    groups = {s["spec"]["triggers"][0]["metadata"]["consumerGroup"] for s in of_kind(docs, "ScaledObject")}
    assert "ledgerflow.connector.netsuite-eu" in groups
    assert "ledgerflow.connector.xero-main" in groups
    pdbs = {p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")}
    assert "ledgerflow-connector-netsuite-eu" in pdbs
