"""Coupa connector package: draft-then-submit invoices, suppliers, and its sandbox."""

from ledgerflow.connectors.coupa.connector import CoupaConnector

__all__ = ["CoupaConnector"]
