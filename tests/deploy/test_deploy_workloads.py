"""Deployments, their autoscalers, disruption budgets, configuration and secrets, per overlay."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ledgerflow.contracts import OBJECT_MODELS
from ledgerflow.contracts.topics import Topics
from ledgerflow.core.settings import Routing, Settings
from tests.deploy.conftest import DEPLOY, Resource, by_name, of_kind, one

SERVICES = {"ingress", "transformer", "poller", "sync-reference", "source-writer", "audit", "connector"}
WORKER_MEMORY_TARGET_MI = 150
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|STATE_URL|CREDENTIAL|KEY", re.IGNORECASE)


def _mi(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def _pod(d: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


def _main(d: Resource) -> dict[str, Any]:
    container: dict[str, Any] = _pod(d)["containers"][0]
    return container


def _service_of(d: Resource) -> str:
    return str(_main(d)["args"][0])


def _erp_of(d: Resource) -> str:
    args = _main(d)["args"]
    return str(args[args.index("--erp") + 1])


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_one_deployment_per_service_and_connection(resources: list[Resource]) -> None:
    deployments = of_kind(resources, "Deployment")
    services = [_service_of(d) for d in deployments]
    assert set(services) == SERVICES
    assert services.count("ingress") == services.count("transformer") == services.count("audit") == 1
    pollers = [d for d in deployments if _service_of(d) == "poller"]
    assert [_main(d)["args"] for d in pollers] == [["poller", "--source", "accessplanit"]]
    references = [d for d in deployments if _service_of(d) == "sync-reference"]
    assert [_main(d)["args"] for d in references] == [["sync-reference", "--all"]]
    # One connector fleet Deployment per ERP kind folder under deploy/base/fleets, each once.
    kinds = sorted(_erp_of(d) for d in deployments if _service_of(d) == "connector")
    folders = sorted(p.name for p in (DEPLOY / "base" / "fleets").iterdir() if p.is_dir())
    assert kinds == folders
    assert kinds, "the shipped layout has at least one fleet"
    for d in deployments:
        if _service_of(d) == "connector":
            assert d["metadata"]["name"] == f"ledgerflow-connector-{_erp_of(d)}"


def test_pod_security(resources: list[Resource]) -> None:
    for d in of_kind(resources, "Deployment"):
        pod = _pod(d)
        name = d["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert tmp, f"{name}: no tmp volume"
        assert "emptyDir" in tmp[0], f"{name}: /tmp must be an emptyDir (read-only root filesystem)"
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "add" not in sc["capabilities"], (name, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (name, c["name"])
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], (name, c["name"])
            assert c["resources"]["requests"], (name, c["name"])
            assert c["resources"]["limits"], (name, c["name"])


def _opened_ports(d: Resource, resources: list[Resource], monkeypatch: Any) -> set[int]:
    """The ports the container's process listens on, from the code's settings under the container's environment.

    ingress: ``LEDGERFLOW_INGRESS_PORT``; audit: ``LEDGERFLOW_AUDIT_PORT`` (API, console, health and
    metrics on one port); transformer and connectors: ``LEDGERFLOW_METRICS_PORT`` (health, metrics).
    """
    from ledgerflow.audit.settings import AuditSettings

    with monkeypatch.context() as m:
        for key, value in _env(resources).items():
            m.setenv(key, value)
        for item in _main(d).get("env", []):
            if "value" in item:
                m.setenv(item["name"], str(item["value"]))
        settings = AuditSettings()
    service = _service_of(d)
    if service == "ingress":
        return {settings.ingress_port}
    if service == "audit":
        return {settings.audit_port}
    return {settings.metrics_port}


def test_every_probe_targets_a_port_the_container_opens(
    resources: list[Resource], monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for d in of_kind(resources, "Deployment"):
        c = _main(d)
        name = d["metadata"]["name"]
        declared = {p["name"]: p["containerPort"] for p in c["ports"]}
        opened = _opened_ports(d, resources, monkeypatch)
        assert set(declared.values()) <= opened, f"{name} declares ports nothing listens on"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            port = declared[get["port"]] if isinstance(get["port"], str) else get["port"]
            assert port in opened, f"{name} {probe} targets port {port}; the container opens {sorted(opened)}"


def test_worker_memory_budget(resources: list[Resource]) -> None:
    for d in of_kind(resources, "Deployment"):
        res = _main(d)["resources"]
        request, limit = _mi(res["requests"]["memory"]), _mi(res["limits"]["memory"])
        assert request <= limit
        if _service_of(d) != "ingress":
            # The target is 150 MB resident: request it, and cap the limit at a third above it.
            assert request <= WORKER_MEMORY_TARGET_MI, d["metadata"]["name"]
            assert limit <= WORKER_MEMORY_TARGET_MI * 4 / 3, d["metadata"]["name"]


def test_one_image_for_every_service(resources: list[Resource]) -> None:
    images = {
        c["image"]
        for d in of_kind(resources, "Deployment")
        for c in _pod(d)["containers"] + _pod(d).get("initContainers", [])
    }
    assert len(images) == 1, images
    (image,) = images
    assert ":" in image.rsplit("/", 1)[-1], f"{image}: pin a tag"
    assert not image.endswith(":latest"), image


def test_every_deployment_has_a_disruption_budget_and_an_autoscaler(resources: list[Resource]) -> None:
    pdbs = of_kind(resources, "PodDisruptionBudget")
    hpas = by_name(resources, "HorizontalPodAutoscaler")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(resources, "ScaledObject")}
    deployments = of_kind(resources, "Deployment")
    for d in deployments:
        name, labels = d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if _selects(p["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets select it"
        # A PDB must select only this Deployment's pods.
        others = [
            o
            for o in deployments
            if o is not d and _selects(matching[0]["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"])
        ]
        assert not others, (
            f"PDB {matching[0]['metadata']['name']} also selects {[o['metadata']['name'] for o in others]}"
        )
        if _service_of(d) in ("poller", "sync-reference"):
            # One poller per source, one reference sync, by design: a second replica would read the
            # same feeds (ERPs) again against their rate limits; the cursors make a restart safe.
            assert d["spec"]["replicas"] == 1, name
            assert d["spec"]["strategy"] == {"type": "Recreate"}, name
            assert name not in scaled, f"{name}: must not autoscale"
            assert name not in hpas, f"{name}: must not autoscale"
        elif _service_of(d) == "ingress":
            assert hpas[name]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
            assert hpas[name]["spec"]["minReplicas"] >= 1
        else:
            assert name in scaled, f"{name}: no KEDA ScaledObject"
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} <= {
        d["metadata"]["name"] for d in deployments
    }


def test_scaled_objects_follow_consumer_groups_and_partitions(resources: list[Resource]) -> None:
    topics = Topics("ledgerflow")
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(resources, "KafkaTopic")}
    deployments = by_name(resources, "Deployment")
    for s in of_kind(resources, "ScaledObject"):
        d = deployments[s["spec"]["scaleTargetRef"]["name"]]
        (trigger,) = s["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["bootstrapServersFromEnv"] == "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS"
        service = _service_of(d)
        if service == "connector":
            group = f"ledgerflow.connector.fleet.{_erp_of(d)}"
            read = [topics.canonical(o) for o in OBJECT_MODELS]
        elif service == "transformer":
            group, read = "ledgerflow.transformer", [t for t in partitions if t.startswith("ledgerflow.raw.")]
        elif service == "source-writer":
            group, read = "ledgerflow.writeback", [t for t in partitions if t.startswith("ledgerflow.inbound.")]
        else:
            group, read = "ledgerflow.audit", [topics.results]
        assert meta["consumerGroup"] == group
        if "topic" in meta:
            assert meta["topic"] in read
        # More replicas than partitions in a group only idle.
        assert 1 <= s["spec"]["minReplicaCount"] <= s["spec"]["maxReplicaCount"] <= max(partitions[t] for t in read)


def test_connection_wiring_matches_routing(resources: list[Resource]) -> None:
    routing = _routing(resources)
    connectors = [d for d in of_kind(resources, "Deployment") if _service_of(d) == "connector"]
    # Every routing-file connection's kind has a fleet; a fleet mounts exactly its kind's Secrets.
    assert {c.erp for c in routing.connections.values()} <= {_erp_of(d) for d in connectors}
    for d in connectors:
        erp = _erp_of(d)
        own = sorted(name for name, c in routing.connections.items() if c.erp == erp)
        secrets = [
            s["secret"]["name"]
            for v in _pod(d)["volumes"]
            if "projected" in v
            for s in v["projected"]["sources"]
            if "secret" in s
        ]
        assert sorted(s for s in secrets if s.startswith("ledgerflow-connection-")) == [
            f"ledgerflow-connection-{name}" for name in own
        ]
        assert d["spec"]["template"]["metadata"]["labels"]["ledgerflow.io/erp"] == erp
        for name in own:
            # The Secret is mounted exactly where the routing file tells the connector to read it.
            (volume,) = [
                v["name"]
                for v in _pod(d)["volumes"]
                if f"ledgerflow-connection-{name}" in yaml.safe_dump(v.get("projected", {}))
            ]
            mounts = {m["name"]: m["mountPath"] for m in _main(d)["volumeMounts"]}
            assert routing.connections[name].credentials_dir is not None
            assert mounts[volume] == str(routing.connections[name].credentials_dir)
        # The stored connections' key: tests/deploy/test_deploy_connections_key.py.
    # The reference sync mounts the credentials of every connection with a reader, each at its
    # credentials_dir (it reads them all); no other workload mounts a connection's credentials.
    from ledgerflow.connectors.reference_main import reference_connections

    (sync,) = [d for d in of_kind(resources, "Deployment") if _service_of(d) == "sync-reference"]
    volumes = {
        s["secret"]["name"]: v["name"]
        for v in _pod(sync)["volumes"]
        for s in v.get("projected", {}).get("sources", [])
        if "secret" in s and s["secret"]["name"].startswith("ledgerflow-connection-")
    }
    read = reference_connections(routing)
    assert read, "the shipped routing has connections with a reader"
    assert sorted(volumes) == sorted(f"ledgerflow-connection-{name}" for name in read)
    mounts = {m["name"]: m for m in _main(sync)["volumeMounts"]}
    for name in read:
        mount = mounts[volumes[f"ledgerflow-connection-{name}"]]
        assert mount["mountPath"] == str(routing.connections[name].credentials_dir)
        assert mount["readOnly"] is True
    for d in of_kind(resources, "Deployment"):
        if _service_of(d) not in ("connector", "sync-reference"):
            assert "ledgerflow-connection-" not in yaml.safe_dump(_pod(d).get("volumes", []))
    # The connector fleets and sync-reference share each connection's ERP quota through the state store.
    sharing = {"connector": 0, "sync-reference": 0}
    for d in of_kind(resources, "Deployment"):
        if _service_of(d) in sharing:
            env = {e["name"]: e.get("value") for e in _main(d).get("env", [])}
            assert env.get("LEDGERFLOW_SHARED_BUDGETS") == "true", d["metadata"]["name"]
            assert "LEDGERFLOW_STATE_URL" in env
            sharing[_service_of(d)] += 1
    assert all(sharing.values()), sharing
    # No template placeholder survives the rendering.
    rendered = yaml.safe_dump_all(resources)
    assert not re.search(r"(?<![A-Z_])CONNECTION(?![A-Z_])", rendered)  # not LEDGERFLOW_CONNECTIONS_KEY_FILE
    assert "--erp, ERP]" not in rendered
    assert "fleet.ERP" not in rendered


def _routing(resources: list[Resource]) -> Routing:
    (cm,) = [c for c in of_kind(resources, "ConfigMap") if c["metadata"]["name"].startswith("ledgerflow-routing")]
    return Routing.model_validate(yaml.safe_load(cm["data"]["routing.yaml"]))


def _env(resources: list[Resource]) -> dict[str, str]:
    (cm,) = [c for c in of_kind(resources, "ConfigMap") if c["metadata"]["name"].startswith("ledgerflow-env")]
    data: dict[str, str] = cm["data"]
    return data


def test_configuration_is_valid_settings(resources: list[Resource], monkeypatch: Any, tmp_path: Path) -> None:
    env = _env(resources)
    known = {f"LEDGERFLOW_{f.upper()}" for f in Settings.model_fields}
    unknown = {k for k in env if k.startswith("LEDGERFLOW_")} - known
    assert not unknown, f"not Settings fields: {unknown}"
    assert set(env) - known <= {"SSL_CERT_FILE"}
    assert not [k for k in env if SECRETISH.search(k)], "secrets belong in Secrets, not the ConfigMap"
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    assert settings.kafka_bootstrap_servers
    assert settings.kafka_enable_idempotence is True
    # Every Deployment mounts the routing ConfigMap where LEDGERFLOW_ROUTING_FILE points.
    routing_dir = str(settings.routing_file.parent) if settings.routing_file else ""
    for d in of_kind(resources, "Deployment"):
        mounts = {m["mountPath"]: m["name"] for m in _main(d)["volumeMounts"]}
        volumes = {v["name"]: v for v in _pod(d)["volumes"]}
        cm = volumes[mounts[routing_dir]]["configMap"]["name"]
        assert cm.startswith("ledgerflow-routing"), d["metadata"]["name"]
        env_from = [e["configMapRef"]["name"] for e in _main(d)["envFrom"] if "configMapRef" in e]
        assert any(n.startswith("ledgerflow-env") for n in env_from)


def test_secrets_are_referenced_never_embedded(resources: list[Resource], overlay: str) -> None:
    shipped = of_kind(resources, "Secret")
    if overlay == "prod":
        assert not shipped, "ship Secret names only, never Secret objects"
    # The dev overlay's worked example of a connection's credentials Secret holds placeholders only.
    for secret in shipped:
        assert secret["metadata"]["name"].startswith("ledgerflow-connection-")
        values = [base64.b64decode(v).decode() for v in secret.get("data", {}).values()]
        assert values
        assert all(v.startswith("replace-with-") for v in values), secret["metadata"]["name"]
    for d in of_kind(resources, "Deployment"):
        for c in _pod(d)["containers"]:
            for e in c.get("env", []):
                # A *_FILE setting names a mounted Secret's file: a path, not a secret.
                if SECRETISH.search(e["name"]) and not e["name"].endswith("_FILE"):
                    assert "secretKeyRef" in e.get("valueFrom", {}), (d["metadata"]["name"], e["name"])
            for e in c.get("envFrom", []):
                assert set(e) <= {"configMapRef", "secretRef", "prefix"}
    services = {_service_of(d): d for d in of_kind(resources, "Deployment")}
    # The state store URL (with its password) reaches only the pods that keep state: not the ingress.
    for name, d in services.items():
        has_state = any(e["name"] == "LEDGERFLOW_STATE_URL" for e in _main(d).get("env", []))
        assert has_state == (name != "ingress"), name


def test_source_secret_files_are_mounted_on_the_ingress(resources: list[Resource]) -> None:
    routing = _routing(resources)
    ingress = next(d for d in of_kind(resources, "Deployment") if _service_of(d) == "ingress")
    mounts = {m["mountPath"]: m["name"] for m in _main(ingress)["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(ingress)["volumes"]}
    files = [s.secrets_file for t in routing.tenants.values() for s in t.sources.values() if s.secrets_file]
    assert files, "the example routing should show *_file secrets"
    for f in files:
        assert not any(s.secrets for t in routing.tenants.values() for s in t.sources.values())
        mount = str(f.parent)
        assert mount in mounts, f"{f} is not on a mounted volume"
        assert "secret" in volumes[mounts[mount]]["projected"]["sources"][0]


def test_services_target_container_ports(resources: list[Resource]) -> None:
    deployments = of_kind(resources, "Deployment")
    for svc in of_kind(resources, "Service"):
        targets = [
            d
            for d in deployments
            if _selects({"matchLabels": svc["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, svc["metadata"]["name"]
        names = {p["name"] for p in _main(targets[0])["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names
    ing = one(resources, "Ingress", "ledgerflow-ingress")
    paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [p["path"] for p in paths] == ["/webhooks/"], "publish only the webhook routes"


def test_kafka_topics(resources: list[Resource]) -> None:
    topics = of_kind(resources, "KafkaTopic")
    names = [t["spec"]["topicName"] for t in topics]
    # Exactly the topics the runtime uses (ledgerflow/topics.py), connector retry tiers included.
    assert sorted(names) == sorted(Topics("ledgerflow").all())
    assert Topics("ledgerflow").retry("connector", 1) in names
    assert len({t["metadata"]["name"] for t in topics}) == len(topics)
    day = 86_400_000
    by_topic = {t["spec"]["topicName"]: t["spec"] for t in topics}
    max_body = Settings().ingress_max_body_bytes
    for name, spec in by_topic.items():
        cfg = spec["config"]
        assert cfg["cleanup.policy"] == "delete", f"{name}: every ledgerflow topic carries events"
        assert cfg["min.insync.replicas"] <= max(spec["replicas"] - 1, 1), name
        if name.startswith(("ledgerflow.raw.", "ledgerflow.dlq.")):
            assert cfg["max.message.bytes"] > max_body, name
        if name.startswith("ledgerflow.dlq."):
            assert cfg["retention.ms"] >= 30 * day, name
    canonical = [by_topic[Topics("ledgerflow").canonical(o)] for o in OBJECT_MODELS]
    raw = [s for n, s in by_topic.items() if n.startswith("ledgerflow.raw.")]
    retry = [s for n, s in by_topic.items() if n.startswith("ledgerflow.retry.")]
    # Raw bodies are kept at least as long as anything downstream, so a mapper fix can be replayed.
    assert min(s["config"]["retention.ms"] for s in raw) >= max(s["config"]["retention.ms"] for s in canonical)
    assert {s["partitions"] for s in retry} == {s["partitions"] for s in canonical}
    assert all(t["metadata"]["namespace"] == "kafka" for t in topics)


def test_prod_uses_tls_and_sasl(prod: list[Resource]) -> None:
    env = _env(prod)
    assert env["LEDGERFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["LEDGERFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    auths = by_name(prod, "TriggerAuthentication")
    for s in of_kind(prod, "ScaledObject"):
        trigger = s["spec"]["triggers"][0]
        assert trigger["authenticationRef"]["name"] in auths
        assert trigger["metadata"]["sasl"] == "scram_sha512"
    for d in of_kind(prod, "Deployment"):
        refs = [e for e in _main(d)["envFrom"] if "secretRef" in e]
        assert refs == [{"prefix": "LEDGERFLOW_KAFKA_SASL_", "secretRef": {"name": "ledgerflow-kafka-credentials"}}]
        init = {c["name"]: c for c in _pod(d).get("initContainers", [])}
        assert env["SSL_CERT_FILE"].startswith("/tmp/")
        assert env["SSL_CERT_FILE"] in init["ca-bundle"]["command"][-1]


def _allowed_ports(policies: list[Resource], labels: dict[str, str], direction: str) -> set[int]:
    ports: set[int] = set()
    for p in policies:
        if direction.capitalize() in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels):
            for rule in p["spec"].get(direction, []):
                ports |= {int(port["port"]) for port in rule.get("ports", [])}
    return ports


def test_network_policies(resources: list[Resource]) -> None:
    policies = of_kind(resources, "NetworkPolicy")
    deny = one(resources, "NetworkPolicy", "ledgerflow-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    for d in of_kind(resources, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        service = _service_of(d)
        assert _selects(deny["spec"]["podSelector"], labels)
        inbound, outbound = _allowed_ports(policies, labels, "ingress"), _allowed_ports(policies, labels, "egress")
        metrics = {"ingress": 8080, "audit": 8081}.get(service, Settings().metrics_port)
        assert metrics in inbound, f"{service}: metrics port closed to the monitoring namespace"
        assert {53, 9092, 9093} <= outbound, service
        assert (5432 in outbound) == (service != "ingress"), service
        calls_out = {"connector", "transformer", "poller", "sync-reference", "source-writer"}
        assert (443 in outbound) == (service in calls_out), service
        if service == "audit":
            assert 8081 in inbound
    controller = one(resources, "NetworkPolicy", "ledgerflow-ingress-from-controller")
    (rule,) = controller["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_commands_exist_in_the_cli(resources: list[Resource]) -> None:
    import typer

    from ledgerflow.app.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    pending = []
    for d in of_kind(resources, "Deployment"):
        args = _main(d)["args"]
        command = commands.get(args[0])
        if command is None and args[0] == "audit":
            pending.append(args[0])
            continue
        assert command is not None, f"{d['metadata']['name']}: no `ledgerflow {args[0]}` command"
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {a for a in args[1:] if a.startswith("--")} <= options, args
    if pending:
        pytest.skip("`ledgerflow audit` is not in the CLI yet; every other command checked")
