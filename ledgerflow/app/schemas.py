"""Published contracts, generated from the code: JSON Schemas and an AsyncAPI 3.0 document.

``ledgerflow schema export DIR`` writes

* ``<object>.schema.json`` for every canonical object (:data:`~ledgerflow.contracts.OBJECT_MODELS`)
  and ``sync_result.schema.json`` (JSON Schema 2020-12, from the pydantic models, serialisation
  form: what travels on the topics);
* ``asyncapi.json``: every topic as a channel with its address, who sends and who receives it
  (operations per service), the message headers (CloudEvents attributes in binary mode, and the
  ``ledgerflow_*`` headers of retries and dead letters) and the payload schemas.

Nothing here is written by hand twice: topic names come from :class:`~ledgerflow.contracts.topics.Topics`,
header names from :mod:`ledgerflow.contracts.headers`, payloads from the models, subscriptions
from the services' own lag watches (the groups and topics they consume).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from ledgerflow import __version__
from ledgerflow.audit.main import audit_lag_watch
from ledgerflow.connectors.main import connector_lag_watch
from ledgerflow.contracts import OBJECT_MODELS, Source, SyncResult
from ledgerflow.contracts import headers as h
from ledgerflow.contracts.reference import INBOUND_KINDS, ReferenceRecord
from ledgerflow.contracts.topics import RETRY_TIERS, STAGES
from ledgerflow.core.settings import Settings
from ledgerflow.transformers.worker import raw_topics
from ledgerflow.transformers.writeback.main import source_writer_lag_watch

__all__ = ["asyncapi_document", "export", "json_schemas"]

_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_CE_HEADERS: dict[str, tuple[str, bool]] = {
    h.CE_SPECVERSION: ("CloudEvents spec version (1.0).", True),
    h.CE_ID: ("Event id: deterministic per delivery (the source's delivery id, else a content hash).", True),
    h.CE_SOURCE: ("URI reference of the producer, e.g. /tenants/acme/mercoa.", True),
    h.CE_TYPE: ("Reverse-DNS event type, e.g. io.ledgerflow.bill.v1.", True),
    h.CE_TENANT: ("Tenant the event belongs to.", True),
    h.CE_TIME: ("When the event happened, RFC 3339.", False),
    h.CE_SUBJECT: ("Record id: the source record id (raw) or the canonical id.", False),
    h.CONTENT_TYPE: ("Media type of the value (application/json).", False),
    h.TRACEPARENT: ("W3C Trace Context of the webhook that started the flow.", False),
}
_RETRY_HEADERS = {
    h.TARGET_CONNECTION: "The only ERP connection that books this record.",
    h.RETRY_TIER: "Retry tier (1-based) the record is parked on.",
    h.RETRY_NOT_BEFORE: "Epoch seconds before which the parked record is not booked again.",
    h.RETRY_PARKED_AT: "Epoch seconds when the record was first parked.",
    h.RETRY_ORIGINAL_TOPIC: "The canonical topic the record came from.",
}
_DLQ_HEADERS = {
    h.DLQ_STAGE: "Stage that dead-lettered the message.",
    h.DLQ_REASON: "Short reason slug (invalid-record, retries-exhausted, unexpected-error…).",
    h.DLQ_DETAIL: "Human-readable reason (at most 4,000 characters).",
    h.DLQ_ATTEMPTS: "Attempts made before giving up.",
    h.DLQ_EXCEPTION: "Exception type of an unexpected-error dead letter.",
    h.DLQ_ORIGINAL_TOPIC: "Topic the message was read from.",
    h.DLQ_ORIGINAL_PARTITION: "Its partition.",
    h.DLQ_ORIGINAL_OFFSET: "Its offset.",
}


def _model_schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(mode="serialization")
    return schema


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (2020-12) of each canonical object and of ``SyncResult``."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in [*OBJECT_MODELS.items(), ("sync_result", SyncResult)]:
        schema = _model_schema(model)
        out[f"{name}.schema.json"] = {"$schema": _SCHEMA_DIALECT, "$id": f"urn:ledgerflow:{name}", **schema}
    return out


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Move ``$defs`` into ``components`` and point every ``$ref`` at ``#/components/schemas/…``."""
    schema = copy.deepcopy(schema)
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, _rewrite(definition))
    hoisted: dict[str, Any] = _rewrite(schema)
    return hoisted


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" and isinstance(v, str) else _rewrite(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def _headers(extra: dict[str, str] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {"type": "string", "description": d} for name, (d, _) in _CE_HEADERS.items()}
    for name, description in (extra or {}).items():
        properties[name] = {"type": "string", "description": description}
    required = [name for name, (_, needed) in _CE_HEADERS.items() if needed]
    return {"type": "object", "properties": properties, "required": required}


def _channel_id(address: str, prefix: str) -> str:
    return address.removeprefix(prefix + ".").replace(".", "-")


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every ledgerflow topic (names for ``settings.topic_prefix``)."""
    settings = settings or Settings()
    topics = settings.topics
    prefix = settings.topic_prefix
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {
        "RawEvent": {
            "name": "RawEvent",
            "title": "A verified webhook body, untouched",
            "summary": "The source's JSON body exactly as received; the CloudEvents headers say who and what.",
            "contentType": "application/json",
            "headers": _headers(),
            "payload": {"description": "The source's webhook body (any JSON)."},
        },
        "SyncResult": {
            "name": "SyncResult",
            "title": "The outcome of one attempt to book one record in one ERP connection",
            "contentType": "application/json",
            "headers": _headers(),
            "payload": _hoist(_model_schema(SyncResult), schemas),
        },
        "ReferenceRecord": {
            "name": "ReferenceRecord",
            "title": "A reference record read from an ERP (inbound)",
            "summary": "Vendor, customer, GL account, tax rate or tracking dimension as the ERP holds it.",
            "contentType": "application/json",
            "headers": _headers({h.CE_DIRECTION: "Always `inbound`: read from an ERP, never booked back into it."}),
            "payload": _hoist(_model_schema(ReferenceRecord), schemas),
        },
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "A message a stage could not handle, unchanged, with the reason in headers",
            "contentType": "application/json",
            "headers": _headers(_DLQ_HEADERS),
            "payload": {"description": "The original message's value, byte for byte."},
        },
    }
    for name, model in OBJECT_MODELS.items():
        key = model.__name__
        messages[key] = {
            "name": key,
            "title": f"Canonical {name.replace('_', ' ')}",
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else key,
            "contentType": "application/json",
            "headers": _headers(_RETRY_HEADERS),
            "payload": _hoist(_model_schema(model), schemas),
        }

    channels: dict[str, Any] = {}

    def channel(address: str, message: str, description: str) -> str:
        cid = _channel_id(address, prefix)
        channels[cid] = {
            "address": address,
            "description": description,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        return cid

    sends: dict[str, list[str]] = {
        "ingress": [],
        "transformer": [],
        "connector": [],
        "audit": [],
        "reference-reader": [],
        "source-writer": [],
    }
    receives: dict[str, list[str]] = {
        "ingress": [],
        "transformer": [],
        "connector": [],
        "audit": [],
        "source-writer": [],
    }
    raw_ids = {}
    for source in Source:
        raw_ids[topics.raw(source.value)] = channel(
            topics.raw(source.value), "RawEvent", f"Verified webhooks of {source.value}, keyed by source record id."
        )
    sends["ingress"] += list(raw_ids.values())
    canonical_ids = {}
    for name, model in OBJECT_MODELS.items():
        canonical_ids[topics.canonical(name)] = channel(
            topics.canonical(name), model.__name__, f"Canonical {name} records, keyed by canonical id."
        )
    sends["transformer"] += list(canonical_ids.values())
    for kind in INBOUND_KINDS:
        sends["reference-reader"].append(
            channel(
                topics.inbound(kind),
                "ReferenceRecord",
                f"Reference records of kind {kind} read from the ERPs (`ledgerflow sync-reference`), "
                "keyed by <connection>:<entity>:<erp id>.",
            )
        )
    results = channel(topics.results, "SyncResult", "One result per booking attempt, keyed by canonical id.")
    sends["connector"].append(results)
    sends["source-writer"].append(results)
    dlq_ids = {}
    for stage in STAGES:
        dlq_ids[topics.dlq(stage)] = channel(topics.dlq(stage), "DeadLetter", f"Dead letters of the {stage} stage.")
    sends["transformer"].append(dlq_ids[topics.dlq("transform")])
    sends["connector"].append(dlq_ids[topics.dlq("connector")])
    sends["audit"].append(dlq_ids[topics.dlq("audit")])
    sends["source-writer"].append(dlq_ids[topics.dlq("writeback")])
    for tier in range(1, RETRY_TIERS + 1):
        address = topics.retry("connector", tier)
        # A parked record keeps its canonical model; the channel carries any of them.
        cid = _channel_id(address, prefix)
        channels[cid] = {
            "address": address,
            "description": f"Records parked on retry tier {tier} (headers say when and for which connection).",
            "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in OBJECT_MODELS.values()},
        }
        sends["connector"].append(cid)
        address = topics.retry("writeback", tier)
        cid = _channel_id(address, prefix)
        channels[cid] = {
            "address": address,
            "description": f"Reference records whose writes into a source are parked on retry tier {tier} "
            "(headers say when and for which tenant and source).",
            "messages": {"ReferenceRecord": {"$ref": "#/components/messages/ReferenceRecord"}},
        }
        sends["source-writer"].append(cid)

    by_address = {c["address"]: cid for cid, c in channels.items()}
    receives["transformer"] += [by_address[t] for t in raw_topics(settings) if t in by_address]
    for _, watched in connector_lag_watch("<connection>", settings):
        receives["connector"] += [by_address[t] for t in watched if t in by_address]
    for _, watched in source_writer_lag_watch(settings):
        receives["source-writer"] += [by_address[t] for t in watched if t in by_address]
    for _, watched in audit_lag_watch(settings):
        receives["audit"] += [by_address[t] for t in watched if t in by_address]

    operations: dict[str, Any] = {}
    for action, table in (("send", sends), ("receive", receives)):
        for role, cids in table.items():
            for cid in dict.fromkeys(cids):
                op = f"{role}-{action}-{cid}"
                operations[op] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{cid}"},
                    "summary": f"ledgerflow {role} {'publishes to' if action == 'send' else 'consumes'} "
                    f"{channels[cid]['address']}",
                    "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in channels[cid]["messages"]],
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ledgerflow",
            "version": __version__,
            "description": "Topics of the ledgerflow pipeline: verified webhooks, canonical records, booking "
            "results, retry tiers and dead letters. Every message carries CloudEvents 1.0 attributes in "
            "Kafka headers (binary content mode).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": settings.kafka_bootstrap_servers or "localhost:9092",
                "protocol": "kafka",
                "description": "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def export(directory: Path, settings: Settings | None = None) -> list[Path]:
    """Write every JSON Schema and ``asyncapi.json`` into ``directory`` (created); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_bytes(orjson.dumps(asyncapi_document(settings), option=orjson.OPT_INDENT_2))
    written.append(path)
    return written
