"""Every Kafka header name ledgerflow writes or reads: the CloudEvents attributes and its own.

CloudEvents 1.0 Kafka protocol binding, binary content mode (``ce_*``, ``content-type``), the W3C
Trace Context ``traceparent``, and ledgerflow's own ``ledgerflow_*`` headers: the connection a
record is addressed to, the retry tiers' parking, the dead-letter reason and original
coordinates, and the provenance of a retried or replayed record. Header values are UTF-8 text.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CE_DIRECTION",
    "CE_ID",
    "CE_PREFIX",
    "CE_RAW_EVENT",
    "CE_SOURCE",
    "CE_SPECVERSION",
    "CE_SUBJECT",
    "CE_TENANT",
    "CE_TIME",
    "CE_TYPE",
    "CONTENT_TYPE",
    "DEFERRED_FROM",
    "DEFERRED_UNTIL",
    "DIRECTION_INBOUND",
    "DLQ_ATTEMPTS",
    "DLQ_DETAIL",
    "DLQ_EXCEPTION",
    "DLQ_ORIGINAL_OFFSET",
    "DLQ_ORIGINAL_PARTITION",
    "DLQ_ORIGINAL_TOPIC",
    "DLQ_PREFIX",
    "DLQ_REASON",
    "DLQ_STAGE",
    "LEDGERFLOW_PREFIX",
    "REPLAYED_FROM",
    "RETRY_NOT_BEFORE",
    "RETRY_OF",
    "RETRY_ORIGINAL_TOPIC",
    "RETRY_PARKED_AT",
    "RETRY_TIER",
    "TARGET_CONNECTION",
    "TRACEPARENT",
]

# CloudEvents (binary mode) and trace context
CE_PREFIX: Final = "ce_"
"""Prefix of every CloudEvents attribute header; an extension ``x`` travels as ``ce_x``."""
CE_SPECVERSION: Final = "ce_specversion"
CE_ID: Final = "ce_id"
CE_SOURCE: Final = "ce_source"
CE_TYPE: Final = "ce_type"
CE_TIME: Final = "ce_time"
CE_SUBJECT: Final = "ce_subject"
CE_TENANT: Final = "ce_tenant"
"""Extension attribute: the tenant the event belongs to (required on every ledgerflow message)."""
CONTENT_TYPE: Final = "content-type"
TRACEPARENT: Final = "traceparent"
CE_RAW_EVENT: Final = "ce_rawevent"
"""Extension attribute: id of the raw event (the accepted webhook) a canonical record or result comes from."""
CE_DIRECTION: Final = "ce_direction"
"""Extension attribute ``direction``: ``inbound`` on records read from an ERP (absent on outbound ones)."""
DIRECTION_INBOUND: Final = "inbound"
"""Value of ``ce_direction`` on records read from an ERP (``<prefix>.inbound.<kind>.v1``)."""

# ledgerflow's own
LEDGERFLOW_PREFIX: Final = "ledgerflow_"
"""Prefix of ledgerflow's own headers (dropped when a canonical record is re-driven)."""
TARGET_CONNECTION: Final = "ledgerflow_target_connection"
"""The only ERP connection that books this canonical record (a parked retry, a sync-records API retry)."""
RETRY_OF: Final = "ledgerflow_retry_of"
"""Event id of the failed attempt that a sync-records API retry re-drives."""
REPLAYED_FROM: Final = "ledgerflow_replayed_from"
"""``<topic>:<partition>:<offset>`` a replayed message was read from (``ledgerflow replay``)."""

# Deferred records (a connection's rate or daily budget spent: parked without using a retry attempt)
DEFERRED_UNTIL: Final = "ledgerflow_deferred_until"
"""Epoch seconds (3 decimals) when the connection's budget allows the deferred record again."""
DEFERRED_FROM: Final = "ledgerflow_deferred_from"
"""Topic the deferred record was read from (a canonical topic or a retry tier): it is handled as read from there."""

# Retry tiers (parked records)
RETRY_TIER: Final = "ledgerflow_retry_tier"
"""Retry tier (1-based) the record is parked on; absent on canonical topics."""
RETRY_NOT_BEFORE: Final = "ledgerflow_retry_not_before"
"""Epoch seconds (3 decimals) before which a parked record is not booked again."""
RETRY_PARKED_AT: Final = "ledgerflow_retry_parked_at"
"""Epoch seconds when the record was first parked (kept across tiers)."""
RETRY_ORIGINAL_TOPIC: Final = "ledgerflow_retry_original_topic"
"""The canonical topic a parked record came from."""

# Dead letters
DLQ_PREFIX: Final = "ledgerflow_dlq_"
"""Prefix of every dead-letter header (removed when a dead letter is replayed)."""
DLQ_STAGE: Final = "ledgerflow_dlq_stage"
"""Stage that dead-lettered the message: ingress, transform, connector, audit."""
DLQ_REASON: Final = "ledgerflow_dlq_reason"
"""Short slug: ``invalid-record``, ``retries-exhausted``, ``enrichment-failed``…"""
DLQ_DETAIL: Final = "ledgerflow_dlq_detail"
"""Human-readable reason (at most 4,000 characters)."""
DLQ_ATTEMPTS: Final = "ledgerflow_dlq_attempts"
"""Attempts made before giving up."""
DLQ_ORIGINAL_TOPIC: Final = "ledgerflow_dlq_original_topic"
"""Topic a replay sends the message back to."""
DLQ_EXCEPTION: Final = "ledgerflow_dlq_exception"
"""Qualified class name of the exception that dead-lettered the message, when there was one."""
DLQ_ORIGINAL_PARTITION: Final = "ledgerflow_dlq_original_partition"
DLQ_ORIGINAL_OFFSET: Final = "ledgerflow_dlq_original_offset"
