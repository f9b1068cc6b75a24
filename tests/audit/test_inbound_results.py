"""Inbound results (the source writers'): the audit keeps their direction and source id; the API filters on it."""

from __future__ import annotations

from pathlib import Path

from ledgerflow.audit.tables import sync_record_id
from ledgerflow.contracts import Operation, Outcome
from tests.audit.api_helpers import audit_api
from tests.audit.audit_helpers import make_result


async def test_inbound_results_are_stored_with_direction_and_source_id_and_filtered(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        await api.store.ingest(make_result(1), "res-out")
        inbound = make_result(
            2,
            direction="inbound",
            canonical_id="acme:ingenious:inbound:vendor:qbo-main:Vendor:56",
            object_type="vendor",
            source="ingenious",
            erp_record_id="56",
            source_record_id=None,
            outcome=Outcome.FAILED,
            amount=None,
            currency=None,
        )
        await api.store.ingest(inbound, "res-in-1")
        # The next attempt succeeded: the source's id is kept as the latest known.
        later = inbound.model_copy(
            update={
                "outcome": Outcome.SUCCEEDED,
                "operation": Operation.CREATE,
                "source_record_id": "company-7",
                "error": None,
                "finished_at": inbound.finished_at.replace(minute=5),
            }
        )
        await api.store.ingest(later, "res-in-2")
        key = await api.key(["read"], ["*"])
        async with api.client(key) as client:
            only_inbound = (await client.get("/v1/sync-records", params={"direction": "inbound"})).json()["data"]
            only_outbound = (await client.get("/v1/sync-records", params={"direction": "outbound"})).json()["data"]
            everything = (await client.get("/v1/sync-records")).json()["data"]
            bad = await client.get("/v1/sync-records", params={"direction": "sideways"})
            health = await api.store.connections(None)
    record = sync_record_id(inbound.canonical_id, "qbo-main")
    assert [(r["id"], r["direction"], r["source_record_id"]) for r in only_inbound] == [
        (record, "inbound", "company-7")
    ]
    assert only_inbound[0]["outcome"] == "succeeded"
    assert only_inbound[0]["attempt_count"] == 2
    assert [(r["direction"], r["source_record_id"]) for r in only_outbound] == [("outbound", None)]
    assert len(everything) == 2
    assert bad.status_code in (400, 422)
    # The ERP connection's health counts its bookings only, not the writes into the sources.
    (qbo,) = health
    assert (qbo.connection, qbo.records) == ("qbo-main", 1)
