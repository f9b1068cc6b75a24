"""QuickBooks Online connector and its local sandbox (``connectors.quickbooks.sandbox``)."""

from connectors.quickbooks.connector import QuickBooksConnector

__all__ = ["QuickBooksConnector"]
