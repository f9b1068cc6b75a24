"""``ledgerflow config check``: validate settings and routing, and show what each service would run.

The plan lists tenants, their sources and connections, every service's topics and consumer groups,
and each connection's ERP, objects and the *names* of its credentials — never a secret's value.
Problems (routing, mapping files, Kafka security, unknown ERP kinds or missing connector packages)
are collected, not raised one by one, so one run shows them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledgerflow.app.startup import masked_url
from ledgerflow.audit.main import audit_lag_watch
from ledgerflow.audit.settings import AuditSettings
from ledgerflow.connectors.fleet import fleet_lag_watch
from ledgerflow.connectors.main import connector_lag_watch
from ledgerflow.connectors.registry import connection_problem, connector_class, reference_map_problems
from ledgerflow.contracts.topics import RETRY_TIERS, STAGES
from ledgerflow.core import aio
from ledgerflow.core.connections import stored_routing
from ledgerflow.core.kafka_security import kafka_client_options
from ledgerflow.core.settings import ConfigError, Routing, Settings
from ledgerflow.ingress.main import ingress_topics
from ledgerflow.transformers.declarative import MappingError, tenant_routers
from ledgerflow.transformers.worker import GROUP_ROLE, raw_topics
from ledgerflow.transformers.writeback.main import source_writer_lag_watch
from ledgerflow.transformers.writeback.runtime import check_writeback

__all__ = ["ConfigReport", "check_config"]


@dataclass
class ConfigReport:
    """What ``config check`` found: ``plan`` (JSON-ready, no secrets) and the ``problems``, one line each."""

    plan: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


def _groups(watch: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    return [{"group": group, "topics": list(topics)} for group, topics in watch]


def _kafka(settings: Settings, problems: list[str]) -> dict[str, Any]:
    try:
        options = kafka_client_options(settings)
    except ConfigError as exc:
        problems.append(f"kafka: {exc}")
        options = {"security_protocol": settings.kafka_security_protocol}
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers or "embedded broker (ledgerflow up / demo only)",
        "security_protocol": options["security_protocol"],
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "client_certificate": settings.kafka_ssl_certfile is not None,
        "ca_file": str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
    }


def _tenants(routing: Routing) -> dict[str, Any]:
    tenants: dict[str, Any] = {}
    for name, tenant in routing.tenants.items():
        sources = {}
        for source, config in tenant.sources.items():
            credentials = f"{len(config.secrets)} inline"
            if config.secrets_file:
                credentials += f" + file {config.secrets_file}"
            sources[source] = {
                "route": f"/webhooks/{name}/{source}",
                "credentials": credentials,
                "header": config.header,
                "mapping": str(config.mapping) if config.mapping else None,
            }
        tenants[name] = {"sources": sources, "connections": list(tenant.connections)}
    return tenants


def _connections(settings: Settings, routing: Routing, problems: list[str]) -> dict[str, Any]:
    connections: dict[str, Any] = {}
    for name, config in routing.connections.items():
        try:
            connector_class(config.erp)
        except (KeyError, ImportError, TypeError) as exc:
            problems.append(f"connection {name}: ERP kind {config.erp!r} cannot be loaded: {exc}")
        else:
            if problem := connection_problem(name, config):
                problems.append(problem)
            problems.extend(reference_map_problems(name, config))
        connections[name] = {
            "erp": config.erp,
            "base_url": config.base_url or "local sandbox (ledgerflow up only)",
            "objects": list(config.objects),
            "credential_keys": sorted(config.credentials),
            "credentials_dir": str(config.credentials_dir) if config.credentials_dir else None,
            # Mounted only into the connection's own pods: elsewhere (a laptop, CI) this is False.
            "credentials_mounted_here": config.credentials_mounted,
            "options": sorted(config.options),
            "tenants": sorted(t for t, tenant in routing.tenants.items() if name in tenant.connections),
            # Served by its ERP kind's fleet, unless it is dedicated (its own worker and group).
            "consumer_groups": _groups(
                connector_lag_watch(name, settings)
                if config.options.get("dedicated")
                else fleet_lag_watch(config.erp, settings, RETRY_TIERS)
            ),
        }
    return connections


def _sync_reference(settings: Settings, routing: Routing, problems: list[str]) -> dict[str, Any]:
    """What ``sync-reference --all`` reads: each connection with a reader, its ERP and interval."""
    from ledgerflow.connectors.reference_main import reference_connections, reference_schedule

    try:
        names = reference_connections(routing)
    except ValueError as exc:
        problems.append(f"sync-reference: {exc}")
        names = []
    return {
        "connections": {
            name: {
                "erp": routing.connections[name].erp,
                "interval_seconds": reference_schedule(routing.connections[name]).interval_seconds,
                "credentials_mounted_here": routing.connections[name].credentials_mounted,
            }
            for name in names
        },
        "writes": [settings.topics.inbound("<kind>")],
    }


def check_config(settings: Settings) -> ConfigReport:
    """Validate ``settings`` and its routing file; build the plan of every service.

    Returns:
        A :class:`ConfigReport`; never raises for a configuration problem (each is a line in
        ``problems``).

    """
    report = ConfigReport()
    problems = report.problems
    try:
        routing = aio.run(stored_routing(settings, settings.load_routing()), settings.event_loop)
    except ConfigError as exc:
        problems.append(f"routing: {exc}")
        routing = Routing()
    try:
        tenant_routers(routing)
    except MappingError as exc:
        problems.extend(f"mapping: {p}" for p in exc.problems)
    try:
        check_writeback(routing)
    except ConfigError as exc:
        problems.append(f"writeback: {exc}")
    audit = AuditSettings()
    topics = settings.topics
    report.plan = {
        "routing_file": str(settings.routing_file) if settings.routing_file else "demo routing (built in)",
        "state_url": masked_url(settings.state_url),
        "topic_prefix": settings.topic_prefix,
        "kafka": _kafka(settings, problems),
        "tenants": _tenants(routing),
        "services": {
            "ingress": {
                "listen": f"{settings.ingress_host}:{settings.ingress_port}",
                "writes": ingress_topics(settings, routing),
            },
            "transformer": {
                "consumer_groups": [{"group": topics.group(GROUP_ROLE), "topics": raw_topics(settings)}],
                "writes": [topics.canonical("<object>"), topics.dlq("transform")],
            },
            "connectors": _connections(settings, routing, problems),
            "sync_reference": _sync_reference(settings, routing, problems),
            "source_writer": {
                "tenants": {
                    name: sorted(
                        source
                        for source, enabled in (
                            ("ingenious", tenant.writeback.ingenious is not None),
                            ("mercoa", tenant.writeback.mercoa.mark_paid),
                            ("monite", tenant.writeback.monite.mark_paid),
                        )
                        if enabled
                    )
                    for name, tenant in routing.tenants.items()
                    if tenant.writeback is not None
                },
                "consumer_groups": _groups(source_writer_lag_watch(settings)),
                "writes": [topics.results, topics.retry("writeback", 1), topics.dlq("writeback")],
            },
            "audit": {
                "listen": f"{audit.audit_host}:{audit.audit_port}",
                "consumer_groups": _groups(audit_lag_watch(settings)),
            },
        },
        "dead_letter_topics": [topics.dlq(stage) for stage in STAGES],
    }
    return report
