"""Xero connector and its local sandbox (``connectors.xero.sandbox``)."""

from connectors.xero.connector import XeroConnector

__all__ = ["XeroConnector"]
