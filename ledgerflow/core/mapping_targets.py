"""Where a stored mapping may go: one check shared by ``ledgerflow mappings`` and ``/v1/mappings``.

A mapping (tenant, connection, kind, source code → ERP id) is refused before it is validated
against the reference cache when it could never apply:

* the connection does not exist (routing file or stored connections): ``404`` ``not-found``;
* the tenant does not route to the connection (its records never reach it): ``409``
  ``tenant-not-routed``;
* the connection's connector does not use references of that kind, so the mapping would be
  stored and silently do nothing (QuickBooks takes its tax codes from the connection's options,
  not from a line's tax rate): ``409`` ``mapping-kind-unused``, naming what the connection uses
  instead.

Which kinds an ERP's connector honours is declared beside the connector
(:attr:`ledgerflow.connectors.base.Connector.mapping_kinds`, looked up through
``ledgerflow.connectors.registry.mapping_kind_use``); this module is below the services and
receives that lookup as a function (:data:`KindsOf`) from the composition layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledgerflow.core.connections import stored_routing
from ledgerflow.core.settings import Routing, Settings

__all__ = ["KindsOf", "MappingKindUse", "MappingTargetProblem", "mapping_routing", "target_problem"]


@dataclass(frozen=True, slots=True)
class MappingKindUse:
    """Which mapping kinds one connection's connector honours, and what it uses instead of the others.

    Args:
        erp: the ERP kind (``quickbooks``…).
        honoured: reference kinds whose mapped ``accounting_id`` the connector sends to the ERP.
        instead: unused kind → what the connector uses instead (completes "quickbooks …").
    """

    erp: str
    honoured: frozenset[str]
    instead: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, kind: str) -> str | None:
        """Why a ``kind`` mapping is not used on this connection (None when it is honoured)."""
        if kind in self.honoured:
            return None
        why = self.instead.get(kind) or f"sends no {kind.replace('_', ' ')} reference to the ERP"
        return (
            f"{self.erp} {why}; {kind} mappings are not used (mapping kinds {self.erp} uses: "
            f"{', '.join(sorted(self.honoured))})"
        )


KindsOf = Callable[[str, Mapping[str, Any]], MappingKindUse | None]
"""(ERP kind, connection options) → the kinds its connector honours; None when it cannot be told."""


@dataclass(frozen=True, slots=True)
class MappingTargetProblem:
    """Why a mapping cannot be stored for its (tenant, connection, kind): an RFC 9457 problem's parts."""

    status: int
    type: str
    title: str
    detail: str


def target_problem(
    routing: Routing, tenant: str, connection: str, kind: str | None, kinds_of: KindsOf | None
) -> MappingTargetProblem | None:
    """Whether ``tenant`` may map ``kind`` references on ``connection`` (None: it may).

    Args:
        routing: the routing file merged with the stored connections.
        tenant: the mapping's tenant.
        connection: the mapping's connection.
        kind: the mapping kind, or None to check the tenant and connection only (CSV imports).
        kinds_of: the connectors' table of honoured kinds; None skips the kind check.
    """
    if connection not in routing.connections:
        return MappingTargetProblem(
            404,
            "not-found",
            "Not found",
            f"no connection named {connection!r} (known: {', '.join(sorted(routing.connections)) or 'none'})",
        )
    tenants = routing.tenants_for(connection)
    if tenant not in tenants:
        return MappingTargetProblem(
            409,
            "tenant-not-routed",
            "Tenant does not route to the connection",
            f"tenant {tenant!r} does not route to {connection!r} (its tenants: "
            f"{', '.join(sorted(tenants)) or 'none'}); a mapping of it would never apply",
        )
    if kind is None or kinds_of is None:
        return None
    config = routing.connections[connection]
    use = kinds_of(config.erp, config.options)
    why = use.refusal(kind) if use is not None else None
    if why is None:
        return None
    return MappingTargetProblem(409, "mapping-kind-unused", "Mapping kind not used", f"{connection}: {why}")


async def mapping_routing(settings: Settings) -> Routing:
    """The routing a mapping is checked against: the routing file and the enabled stored connections.

    Raises:
        ConfigError: the routing file or the stored connections are invalid.
    """
    return await stored_routing(settings, settings.load_routing(), decrypt=())
