"""Prometheus metrics shared by every service (names ``ledgerflow_*``, units in the name).

Labels are bounded: tenant, source, object, erp, connection, stage, outcome — never record ids.
Each service exposes them on ``/metrics`` (the ingress on its own port, workers on
``metrics_port``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from ledgerflow import __version__

__all__ = [
    "AUDIT_REFUSED",
    "BROKER_RESTARTS",
    "BUILD_INFO",
    "CONNECTION_DEFERRED",
    "CONNECTION_QUOTA_REMAINING",
    "CONNECTION_THROTTLED",
    "CONNECTOR_RESULTS",
    "CONSUMER_LAG",
    "DEAD_LETTER_REPLAYS",
    "DLQ_MESSAGES",
    "END_TO_END_LATENCY",
    "ERP_REQUESTS",
    "ERP_REQUEST_DURATION",
    "FLEET_CONNECTIONS",
    "FLEET_RECORDS",
    "OUTBOX_REDRIVES",
    "POLLED_RECORDS",
    "POLLER_LAST_SUCCESS",
    "POLLS",
    "READ_BACK",
    "REDELIVERED_SKIPPED",
    "REDRIVES",
    "REFERENCE_LAST_SUCCESS",
    "REFERENCE_PREFLIGHT_FAILURES",
    "REFERENCE_RECORDS",
    "REFERENCE_SYNCS",
    "RETRIES",
    "STAGE_DURATION",
    "STAGE_IN_FLIGHT",
    "SUPERSEDED",
    "TRANSFORM_EVENTS",
    "WEBHOOKS_IN_FLIGHT",
    "WEBHOOKS_RECEIVED",
    "WEBHOOK_BYTES",
    "WEBHOOK_DURATION",
    "WRITEBACK_RESULTS",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

BUILD_INFO = Info("ledgerflow_build", "Version of the running ledgerflow build.")
BUILD_INFO.info({"version": __version__})

WEBHOOKS_RECEIVED = Counter(
    "ledgerflow_webhooks_received_total",
    "Webhooks received by the ingress, by outcome (accepted, bad_request, unauthorized, not_found, "
    "too_large, unsupported_media_type, method_not_allowed, unavailable).",
    ["tenant", "source", "object", "outcome"],
)
WEBHOOK_DURATION = Histogram(
    "ledgerflow_webhook_request_duration_seconds",
    "Time from request received to response, including the broker acknowledgement.",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
WEBHOOKS_IN_FLIGHT = Gauge("ledgerflow_webhooks_in_flight", "Webhook requests being handled now.")
WEBHOOK_BYTES = Counter("ledgerflow_webhook_body_bytes_total", "Webhook body bytes accepted.", ["source"])

TRANSFORM_EVENTS = Counter(
    "ledgerflow_transform_events_total",
    "Raw events handled by transformers, by outcome (mapped, skipped_unknown, dead_lettered, duplicate).",
    ["source", "object", "outcome"],
)
STAGE_DURATION = Histogram(
    "ledgerflow_stage_duration_seconds",
    "Time to handle one message in a stage (transform, connector, audit).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_IN_FLIGHT = Gauge("ledgerflow_stage_in_flight", "Messages being handled now, by stage.", ["stage"])

REDRIVES = Counter(
    "ledgerflow_redrives_total",
    "Failed sync records re-driven to their ERP connection through the audit API or console.",
    ["tenant", "connection"],
)
DEAD_LETTER_REPLAYS = Counter(
    "ledgerflow_dead_letter_replays_total",
    "Dead letters replayed to their original topic through the audit API or console, by stage.",
    ["stage"],
)
AUDIT_REFUSED = Counter(
    "ledgerflow_audit_requests_refused_total",
    "Audit API and console requests refused: 401 (no valid credential) or 403 (scope or CSRF token missing).",
    ["status"],
)
CONNECTOR_RESULTS = Counter(
    "ledgerflow_connector_results_total",
    "SyncResults written by connectors, by outcome (succeeded, failed, skipped, duplicate).",
    ["tenant", "object", "erp", "connection", "outcome"],
)
READ_BACK = Counter(
    "ledgerflow_readback_total",
    "Read-back verifications of booked documents, by result (matched, mismatched, unavailable, disabled).",
    ["tenant", "object", "erp", "connection", "result"],
)
ERP_REQUESTS = Counter(
    "ledgerflow_erp_requests_total",
    "HTTP requests sent to ERPs, by status class (2xx, 4xx, 5xx, 429, error).",
    ["erp", "connection", "operation", "status"],
)
ERP_REQUEST_DURATION = Histogram(
    "ledgerflow_erp_request_duration_seconds",
    "ERP HTTP request latency.",
    ["erp", "connection", "operation"],
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "ledgerflow_end_to_end_latency_seconds",
    "Time from webhook accepted by the ingress to SyncResult written.",
    ["erp", "object"],
    buckets=_LATENCY_BUCKETS,
)
ERP_UP = Gauge(
    "ledgerflow_erp_up",
    "1 when the connection's last ERP check (credentials and reachability) passed, 0 when it failed.",
    ["connection", "erp"],
)
ERP_CHECKED = Gauge(
    "ledgerflow_erp_check_timestamp_seconds",
    "When the connection's ERP was last checked (Unix time).",
    ["connection", "erp"],
)
RETRIES = Counter("ledgerflow_retries_total", "Retried attempts, by stage and ERP.", ["stage", "erp"])
SUPERSEDED = Counter(
    "ledgerflow_superseded_total",
    "Records skipped because a newer version of them was already booked, by ERP and connection.",
    ["erp", "connection"],
)
REDELIVERED_SKIPPED = Counter(
    "ledgerflow_redelivered_skipped_total",
    "Records of a redelivered batch skipped because their outcome was already durable, by stage.",
    ["stage"],
)
POLLED_RECORDS = Counter(
    "ledgerflow_poller_records_total", "Records a poller published to its raw topic.", ["source", "tenant", "resource"]
)
POLLS = Counter(
    "ledgerflow_poller_polls_total",
    "Poll rounds of a poller, by outcome (ok, failed).",
    ["source", "tenant", "outcome"],
)
POLLER_LAST_SUCCESS = Gauge(
    "ledgerflow_poller_last_success_timestamp_seconds",
    "When a poller last completed a round (unix s).",
    ["source", "tenant"],
)
REFERENCE_LAST_SUCCESS = Gauge(
    "ledgerflow_reference_sync_last_success_timestamp_seconds",
    "When the sync-reference service last completed a pass of a connection (unix s).",
    ["connection"],
)
REFERENCE_RECORDS = Counter(
    "ledgerflow_reference_records_total",
    "Reference records an ERP reader published to an inbound topic (ledgerflow sync-reference).",
    ["connection", "kind"],
)
REFERENCE_PREFLIGHT_FAILURES = Counter(
    "ledgerflow_reference_preflight_failures_total",
    "References a record named that the connection's reference cache does not hold (or holds inactive): "
    "refused before any ERP call (reference.unknown), one per missing reference, by cached kind.",
    ["connection", "kind"],
)
REFERENCE_SYNCS = Counter(
    "ledgerflow_reference_syncs_total",
    "Reference sync passes of an ERP connection, by outcome (ok, failed).",
    ["connection", "outcome"],
)
WRITEBACK_RESULTS = Counter(
    "ledgerflow_writeback_results_total",
    "Writes of records read from an ERP into a source (ledgerflow source-writer), by outcome.",
    ["tenant", "source", "kind", "connection", "outcome"],
)
OUTBOX_REDRIVES = Counter(
    "ledgerflow_outbox_redrives_total",
    "Accepted webhooks sent again from the outbox (redriven), or left for an operator (given_up).",
    ["outcome"],
)
BROKER_RESTARTS = Counter(
    "ledgerflow_embedded_broker_restarts_total",
    "Times `ledgerflow up` found its embedded broker dead and restarted it.",
)
CONNECTION_THROTTLED = Counter(
    "ledgerflow_connection_throttled_total",
    "ERP requests of a connection held back by its own budget or refused by the ERP, by reason "
    "(minute, concurrent, day, retry_after, local_rate, local_day).",
    ["erp", "connection", "reason"],
)
CONNECTION_DEFERRED = Counter(
    "ledgerflow_connection_deferred_total",
    "Records of a connection parked on a retry topic without using a retry attempt because its rate or "
    "daily budget was spent (reason rate or day), and parked records put back because not yet due (requeued).",
    ["erp", "connection", "reason"],
)
CONNECTION_QUOTA_REMAINING = Gauge(
    "ledgerflow_connection_quota_remaining",
    "ERP calls a connection has left in the window (minute, day), as the ERP last said (X-MinLimit-Remaining, "
    "X-DayLimit-Remaining) or, without those headers, as the connector fleet counts.",
    ["erp", "connection", "window"],
)
FLEET_CONNECTIONS = Gauge(
    "ledgerflow_fleet_connections",
    "Connections a connector fleet knows, by state (enabled, disabled, built: a connector is built and cached).",
    ["erp", "state"],
)
FLEET_RECORDS = Counter(
    "ledgerflow_fleet_records_total",
    "Canonical records a connector fleet consumed, by what became of them (routed, no_connection, disabled).",
    ["erp", "outcome"],
)
DLQ_MESSAGES = Counter("ledgerflow_dlq_messages_total", "Messages written to a dead-letter topic.", ["stage", "reason"])
CONSUMER_LAG = Gauge(
    "ledgerflow_consumer_lag_messages",
    "Messages behind the log end offset, by consumer group and topic.",
    ["group", "topic"],
)
