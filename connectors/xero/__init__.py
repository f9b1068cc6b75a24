"""Xero connector and its local sandbox (``ledgerflow.connectors.xero.sandbox``)."""

from ledgerflow.connectors.xero.connector import XeroConnector

__all__ = ["XeroConnector"]
