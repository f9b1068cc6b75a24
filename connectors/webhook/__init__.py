"""Generic HTTP connector (erp kind ``http``): Standard Webhooks-signed POSTs, and its receiver."""

from ledgerflow.connectors.webhook.connector import WebhookConnector

__all__ = ["WebhookConnector"]
