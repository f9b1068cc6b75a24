"""NetSuite connector package: SuiteTalk REST record v1 upsert by external id, and its sandbox."""

from ledgerflow.connectors.netsuite.connector import NetSuiteConnector

__all__ = ["NetSuiteConnector"]
