"""Connector classes and sandboxes by ERP kind, imported lazily so one ERP's extra is optional.

``CONNECTORS[erp]`` and ``SANDBOXES[erp]`` are ``"module:attribute"`` paths; :func:`connector_class`
and :func:`sandbox_module` import them on demand and say which extra to install when missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ledgerflow.connectors.base import Connector

__all__ = ["CONNECTORS", "SANDBOXES", "connector_class", "sandbox_module"]

CONNECTORS: dict[str, str] = {
    "quickbooks": "ledgerflow.connectors.quickbooks:QuickBooksConnector",
    "xero": "ledgerflow.connectors.xero:XeroConnector",
    "netsuite": "ledgerflow.connectors.netsuite:NetSuiteConnector",
    "sap": "ledgerflow.connectors.sap:SapConnector",
    "coupa": "ledgerflow.connectors.coupa:CoupaConnector",
    "http": "ledgerflow.connectors.webhook:WebhookConnector",
}
"""ERP kind (``ConnectionConfig.erp``) → connector class path."""

SANDBOXES: dict[str, str] = {
    "quickbooks": "ledgerflow.connectors.quickbooks.sandbox",
    "xero": "ledgerflow.connectors.xero.sandbox",
    "netsuite": "ledgerflow.connectors.netsuite.sandbox",
    "sap": "ledgerflow.connectors.sap.sandbox",
    "coupa": "ledgerflow.connectors.coupa.sandbox",
    "http": "ledgerflow.connectors.webhook.receiver",
}
"""ERP kind → module with ``create_app(...)`` for the local sandbox."""


def connector_class(erp: str) -> type[Connector]:
    """The connector class for ``erp``.

    Raises:
        KeyError: ``erp`` is not a known ERP kind.
        ImportError: the connector's package (or its optional dependencies) is not installed.
    """
    module_name, _, attr = CONNECTORS[erp].partition(":")
    module = _import(module_name, extra=_EXTRAS.get(erp))
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"{CONNECTORS[erp]} is not a Connector subclass")
    return cls


def sandbox_module(erp: str) -> ModuleType:
    """The sandbox module of ``erp`` (has ``create_app``).

    Raises:
        KeyError: ``erp`` is not a known ERP kind.
        ImportError: the sandbox extra is not installed.
    """
    return _import(SANDBOXES[erp], extra="sandbox")


_EXTRAS = {"netsuite": "netsuite", "http": "http"}
"""ERP kinds whose connector needs an optional extra of the ledgerflow package."""


def _import(module_name: str, *, extra: str | None) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith(("connectors", "ledgerflow")):
            raise
        raise ImportError(
            f"{module_name} needs {exc.name!r}: install the extra with pip install 'ledgerflow[{extra}]'"
        ) from exc
