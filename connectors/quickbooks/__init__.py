"""QuickBooks Online connector and its local sandbox (``ledgerflow.connectors.quickbooks.sandbox``)."""

from ledgerflow.connectors.quickbooks.connector import QuickBooksConnector

__all__ = ["QuickBooksConnector"]
