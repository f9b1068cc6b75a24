"""Start-up failures are one clear line and a non-zero exit; ``config check`` validates and plans.

Each misconfiguration runs the real ``ledgerflow`` command in a subprocess with a clean
environment, and asserts the exit code, that the message names the culprit, and that no
traceback is printed (it is, with ``--debug``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ledgerflow.core.embedded import free_port
from ledgerflow.core.settings import Settings, normalize_state_url


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERFLOW_")}
    clean["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "ledgerflow", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    assert proc.returncode != 0, text
    first = next(line for line in text.splitlines() if line.startswith("error:") or "problem" in line)
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    assert first


def test_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip()


def test_unreachable_kafka_names_the_bootstrap_address() -> None:
    port = free_port()  # nothing listens there
    proc = _run("topics", "create", env={"LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    _one_clear_line(proc, f"127.0.0.1:{port}", "Kafka")
    assert proc.returncode == 1


def test_silent_kafka_times_out_with_the_address() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = _run("ingress", env={"LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": address}, timeout=90)
    _one_clear_line(proc, address)


def test_unreachable_postgres_names_the_state_store() -> None:
    port = free_port()
    proc = _run(
        "keys",
        "list",
        env={"LEDGERFLOW_STATE_URL": f"postgresql://ledgerflow:hunter2@127.0.0.1:{port}/ledgerflow"},
    )
    _one_clear_line(proc, "state store", f"127.0.0.1:{port}")
    assert "hunter2" not in proc.stdout + proc.stderr


def test_bad_state_url_names_the_setting() -> None:
    proc = _run("keys", "list", env={"LEDGERFLOW_STATE_URL": "mysql://h/db"})
    _one_clear_line(proc, "LEDGERFLOW_STATE_URL")
    assert proc.returncode == 2


def test_unknown_sasl_mechanism_is_a_setting_error() -> None:
    proc = _run(
        "topics",
        "create",
        env={
            "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "LEDGERFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LEDGERFLOW_KAFKA_SASL_MECHANISM": "KERBEROS",
        },
    )
    _one_clear_line(proc, "LEDGERFLOW_KAFKA_SASL_MECHANISM")
    assert proc.returncode == 2


def test_incomplete_sasl_names_the_missing_setting() -> None:
    proc = _run(
        "topics",
        "create",
        env={
            "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "LEDGERFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LEDGERFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        },
    )
    _one_clear_line(proc, "LEDGERFLOW_KAFKA_SASL_USERNAME")
    assert proc.returncode == 2


def test_port_in_use_names_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run("sandbox", "xero", "--port", str(port))
    _one_clear_line(proc, f"127.0.0.1:{port}", "in use")


def test_unknown_sandbox_lists_the_known_ones() -> None:
    proc = _run("sandbox", "oracle")
    _one_clear_line(proc, "oracle", "quickbooks", "xero")
    assert proc.returncode == 2


def test_debug_shows_the_traceback() -> None:
    port = free_port()
    proc = _run("--debug", "topics", "create", env={"LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_config_check_prints_the_plan_without_secrets(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        yaml.safe_dump(
            {
                "tenants": {"acme": {"sources": {"mercoa": {"tokens": ["tok-s3cr3t"]}}, "connections": ["qbo-main"]}},
                "connections": {
                    "qbo-main": {
                        "erp": "quickbooks",
                        "base_url": "https://quickbooks.api.intuit.com",
                        "objects": ["bill", "vendor"],
                        "credentials": {"realm_id": "1", "client_secret": "cs-s3cr3t"},
                        "credentials_dir": "/run/secrets/qbo-main",
                    }
                },
            }
        )
    )
    proc = _run("config", "check", "--routing", str(routing), "--json")
    report = json.loads(proc.stdout)
    # The credentials folder is mounted only in that connection's pods: noted, not a problem.
    assert report["problems"] == []
    assert proc.returncode == 0
    assert report["plan"]["services"]["connectors"]["qbo-main"]["credentials_mounted_here"] is False
    plan = report["plan"]
    assert plan["tenants"]["acme"]["sources"]["mercoa"]["route"] == "/webhooks/acme/mercoa"
    conn = plan["services"]["connectors"]["qbo-main"]
    assert conn["credential_keys"] == ["client_secret", "realm_id"]
    assert conn["tenants"] == ["acme"]
    assert conn["consumer_groups"][0]["group"] == "ledgerflow.connector.fleet.quickbooks"
    assert plan["services"]["ingress"]["writes"] == ["ledgerflow.raw.mercoa"]
    assert "s3cr3t" not in proc.stdout + proc.stderr


def test_config_check_reports_every_problem(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump({"tenants": {"acme": {"connections": ["nowhere"]}}}))
    proc = _run(
        "config",
        "check",
        "--routing",
        str(routing),
        env={"LEDGERFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS": "k:9093"},
    )
    assert proc.returncode == 2
    text = proc.stdout + proc.stderr
    assert "(top level): tenant 'acme' routes to unknown connection 'nowhere'" in text
    assert "LEDGERFLOW_KAFKA_SASL_MECHANISM is required" in text
    assert "Traceback" not in text


def test_config_check_of_a_broken_routing_file(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text("connections:\n  q:\n    erp: quickbooks\n    rate_limit: 5\n")
    proc = _run("config", "check", "--routing", str(routing))
    assert proc.returncode == 2
    assert "routing:" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db:5432/lf", "postgresql+asyncpg://u:p@db:5432/lf"),
        (
            "postgresql://db/lf?sslmode=require&application_name=x",
            "postgresql+asyncpg://db/lf?ssl=require&application_name=x",
        ),
        ("postgresql+asyncpg://db/lf", "postgresql+asyncpg://db/lf"),
        ("sqlite:///state.db", "sqlite+aiosqlite:///state.db"),
    ],
)
def test_state_url_forms_operators_are_handed(given: str, used: str) -> None:
    assert normalize_state_url(given) == used
    assert Settings(state_url=given).state_url == used
