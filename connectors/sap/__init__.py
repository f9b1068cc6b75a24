"""SAP S/4HANA Cloud connector package: supplier invoices with CSRF handshake, and its sandbox."""

from ledgerflow.connectors.sap.connector import SapConnector

__all__ = ["SapConnector"]
