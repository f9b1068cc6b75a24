"""The ERP registry: one line per ERP kind, imported lazily so one ERP's extra is optional.

:data:`ERPS` maps the ERP kind (``ConnectionConfig.erp`` in the routing file) to where its
connector class and its local sandbox live, and which ``ledgerflow[<extra>]`` its client needs.
Every list of ERP kinds (:data:`ERP_KINDS`: the routing check, ``ledgerflow sandbox``, ``demo
--all-erps``) is derived from it. Adding an ERP: its own package under ``connectors/`` and one
line here (CONTRIBUTING.md, "Add an ERP").
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ledgerflow.connectors.base import Connector, PermanentError
from ledgerflow.connectors.config import validate_connection
from ledgerflow.connectors.references import REFERENCE_KINDS
from ledgerflow.core.mapping_targets import MappingKindUse
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Routing

__all__ = [
    "ERPS",
    "ERP_KINDS",
    "ErpEntry",
    "check_routing",
    "connection_problem",
    "connector_class",
    "mapping_kind_use",
    "reference_map_problems",
    "sandbox_module",
]


@dataclass(frozen=True, slots=True)
class ErpEntry:
    """Where one ERP kind lives.

    Args:
        connector: ``"package:Class"`` of its :class:`~ledgerflow.connectors.base.Connector`.
        extra: the ``ledgerflow[<extra>]`` its connector's dependencies come with, if any.
        sandbox: module with ``create_app()`` and ``sandbox_connection`` for the local sandbox;
            default ``<package>.sandbox``.
    """

    connector: str
    extra: str | None = None
    sandbox: str | None = None

    @property
    def config_module(self) -> str:
        """The module with the ERP's typed ``Options`` and ``Credentials``: ``<package>.config``."""
        return f"{self.connector.partition(':')[0]}.config"

    @property
    def sandbox_module(self) -> str:
        """The sandbox module's name."""
        return self.sandbox or f"{self.connector.partition(':')[0]}.sandbox"


ERPS: dict[str, ErpEntry] = {
    "quickbooks": ErpEntry("ledgerflow.connectors.quickbooks:QuickBooksConnector"),
    "xero": ErpEntry("ledgerflow.connectors.xero:XeroConnector"),
    "netsuite": ErpEntry("ledgerflow.connectors.netsuite:NetSuiteConnector", extra="netsuite"),
    "sap": ErpEntry("ledgerflow.connectors.sap:SapConnector"),
    "coupa": ErpEntry("ledgerflow.connectors.coupa:CoupaConnector"),
    "http": ErpEntry("ledgerflow.connectors.webhook:WebhookConnector", extra="http"),
}
"""ERP kind (``ConnectionConfig.erp``) → its connector, extra and sandbox."""

ERP_KINDS: tuple[str, ...] = tuple(ERPS)
"""Every ERP kind ledgerflow has a connector for, in registry order."""


def check_routing(routing: Routing) -> None:
    """Check every connection of ``routing``: a registered ERP kind and settings its ``config.py`` accepts.

    Unknown option or credential keys, wrong types and renamed options are errors.

    Raises:
        ConfigError: naming each connection with an unknown kind (and the known kinds) or with
            invalid options or credentials (and each wrong key).
    """
    wrong = [f"{name}: {config.erp!r}" for name, config in routing.connections.items() if config.erp not in ERPS]
    if wrong:
        raise ConfigError(f"unknown ERP kind in connection(s) {'; '.join(wrong)} (known: {', '.join(ERPS)})")
    problems = [p for name, config in routing.connections.items() if (p := connection_problem(name, config))]
    if problems:
        raise ConfigError("invalid connection settings: " + " | ".join(problems))


def connection_problem(name: str, config: ConnectionConfig) -> str | None:
    """What is wrong with connection ``name``'s options and credentials (its ERP's ``config.py``), or None.

    Raises:
        KeyError: ``config.erp`` is not a registered ERP kind.
    """
    module = importlib.import_module(ERPS[config.erp].config_module)
    try:
        validate_connection(name, config, module.Options, module.Credentials)
    except PermanentError as exc:
        return exc.message
    return None


def mapping_kind_use(erp: str, options: Mapping[str, Any]) -> MappingKindUse | None:
    """Which mapping kinds a connection of ``erp`` with ``options`` honours (its connector's table).

    :attr:`Connector.mapping_kinds` and :meth:`Connector.honoured_mapping_kinds`, with what the
    connector uses instead of the others. None when the ERP kind is unknown or its connector
    cannot be loaded (its extra is not installed): the kind is then not checked.
    """
    try:
        cls = connector_class(erp)
    except (KeyError, ImportError, TypeError):
        return None
    return MappingKindUse(erp, cls.honoured_mapping_kinds(options), cls.unused_mapping_kinds)


def reference_map_problems(name: str, config: ConnectionConfig) -> list[str]:
    """What is wrong with connection ``name``'s YAML ``options.reference_map`` (empty: nothing).

    An unknown kind, entries that are not a mapping, or a kind the connection's connector does
    not honour (:func:`mapping_kind_use`: the mapping would silently do nothing).
    """
    raw = config.options.get("reference_map")
    if raw is None:
        return []
    where = f"connection {name}: options.reference_map"
    if not isinstance(raw, Mapping):
        return [f"{where} must be a mapping of reference kind → {{source key: ERP id}}"]
    use = mapping_kind_use(config.erp, config.options)
    problems: list[str] = []
    for kind, entries in raw.items():
        if kind not in REFERENCE_KINDS:
            problems.append(f"{where}.{kind}: unknown reference kind (one of {', '.join(REFERENCE_KINDS)})")
        elif not isinstance(entries, Mapping):
            problems.append(f"{where}.{kind} must map source keys to ERP ids")
        elif use is not None and (why := use.refusal(str(kind))):
            problems.append(f"{where}.{kind}: {why}")
    return problems


def connector_class(erp: str) -> type[Connector]:
    """The connector class for ``erp``.

    Raises:
        KeyError: ``erp`` is not a known ERP kind.
        ImportError: the connector's package (or its optional dependencies) is not installed.
        TypeError: the registered attribute is not a Connector subclass.
    """
    entry = ERPS[erp]
    module_name, _, attr = entry.connector.partition(":")
    module = _import(module_name, extra=entry.extra)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"{entry.connector} is not a Connector subclass")
    return cls


def sandbox_module(erp: str) -> ModuleType:
    """The sandbox module of ``erp`` (has ``create_app``).

    Raises:
        KeyError: ``erp`` is not a known ERP kind.
        ImportError: the sandbox extra is not installed.
    """
    return _import(ERPS[erp].sandbox_module, extra="sandbox")


def _import(module_name: str, *, extra: str | None) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith(("connectors", "ledgerflow")):
            raise
        raise ImportError(
            f"{module_name} needs {exc.name!r}: install the extra with pip install 'ledgerflow[{extra}]'"
        ) from exc
