"""Tenant in every identity: the audit migration 0005 and the state store's binder-key move.

Rows written before canonical ids carried the tenant (``mercoa:bill:in_1``) are moved to
``<tenant>:mercoa:bill:in_1``: the audit's sync records (new deterministic ids, attempts
re-pointed), its canonical records (key, body, ``ce_subject``) and the binder (``vendor-ref:…``
references too). Two tenants with the same source id end as two rows each.
"""

from __future__ import annotations

import orjson
import pytest

from ledgerflow.audit.migrate import upgrade
from ledgerflow.audit.store import AuditStore, CanonicalEvent
from ledgerflow.audit.tables import sync_record_id
from ledgerflow.contracts import is_legacy_key, tenant_scoped
from ledgerflow.core.state import StateStore
from tests.audit.audit_helpers import MakeResult


def test_legacy_keys_are_recognised_and_scoped_once() -> None:
    assert is_legacy_key("mercoa:bill:in_1")
    assert is_legacy_key("vendor-ref:ent_1")
    assert is_legacy_key("mercoa:bill:in:with:colons")
    assert not is_legacy_key("acme:mercoa:bill:in_1")
    assert not is_legacy_key("acme:vendor-ref:ent_1")
    # A tenant named like a source is no legacy key: its second part is a source, not an object.
    assert not is_legacy_key("mercoa:mercoa:bill:in_1")
    assert tenant_scoped("acme", "mercoa:bill:in_1") == "acme:mercoa:bill:in_1"
    assert tenant_scoped("acme", "acme:mercoa:bill:in_1") == "acme:mercoa:bill:in_1"
    assert tenant_scoped("beta", "acme:mercoa:bill:in_1") == "acme:mercoa:bill:in_1"


async def test_audit_rows_move_to_tenant_scoped_ids(sqlite_url: str, make_result: MakeResult) -> None:
    await upgrade(sqlite_url, "0004")
    store = AuditStore(sqlite_url)
    try:
        # Two tenants' records written the old way (no tenant in the canonical id). Rows that
        # collided then (same source id) were one row already; the migration gives it its tenant.
        for n, tenant in ((1, "acme"), (2, "beta")):
            result = make_result(n, tenant=tenant, event_id=f"evt-{tenant}")
            assert result.canonical_id == f"mercoa:bill:in_{n}"
            await store.ingest(result, f"r-{tenant}")
        body = {"canonical_id": "mercoa:bill:in_1", "tenant": "acme", "total": "12.30"}
        await store.put_canonical(
            CanonicalEvent(
                canonical_id="mercoa:bill:in_1",
                object_type="bill",
                tenant="acme",
                event_id="c-1",
                headers={"ce_subject": "mercoa:bill:in_1", "ce_tenant": "acme"},
                body=orjson.dumps(body),
                topic="ledgerflow.bill.v1",
                partition=0,
                offset=1,
            )
        )
    finally:
        await store.close()

    await upgrade(sqlite_url)
    store = AuditStore(sqlite_url)
    try:
        assert await store.get_record(sync_record_id("mercoa:bill:in_1", "qbo-main")) is None
        for n, tenant in ((1, "acme"), (2, "beta")):
            found = await store.get_record(sync_record_id(f"{tenant}:mercoa:bill:in_{n}", "qbo-main"))
            assert found is not None, tenant
            record, attempts = found
            assert (record.tenant, record.canonical_id) == (tenant, f"{tenant}:mercoa:bill:in_{n}")
            assert [a.event_id for a in attempts] == [f"evt-{tenant}"]
        canonical = await store.get_canonical("acme:mercoa:bill:in_1", tenant="acme")
        assert canonical is not None
        assert orjson.loads(canonical.body)["canonical_id"] == "acme:mercoa:bill:in_1"
        assert canonical.headers["ce_subject"] == "acme:mercoa:bill:in_1"
        # Another tenant never sees it.
        assert await store.get_canonical("acme:mercoa:bill:in_1", tenant="beta") is None
    finally:
        await store.close()


@pytest.mark.parametrize("shared", [False, True])
async def test_binder_rows_move_to_tenant_scoped_keys(tmp_path: object, shared: bool) -> None:
    state = StateStore("sqlite+aiosqlite://")
    try:
        await state.create_all()
        await state.put_binding("qbo", "mercoa:bill:in_1", erp_record_id="11", erp_version="0", content_hash="h1")
        await state.put_binding("qbo", "vendor-ref:ent_1", erp_record_id="7", erp_version=None, content_hash="")
        await state.put_binding("qbo", "beta:mercoa:bill:in_1", erp_record_id="12", erp_version="0", content_hash="h")
        if shared:
            # Written after the upgrade under the new key: it is newer and wins.
            await state.put_binding(
                "qbo", "acme:mercoa:bill:in_1", erp_record_id="99", erp_version="3", content_hash="new"
            )
        assert sorted(await state.legacy_keys("qbo")) == ["mercoa:bill:in_1", "vendor-ref:ent_1"]
        assert await state.migrate_legacy_keys("qbo", "acme") == 2
        assert await state.migrate_legacy_keys("qbo", "acme") == 0  # idempotent
        assert await state.legacy_keys("qbo") == []
        bill = await state.get_binding("qbo", "acme:mercoa:bill:in_1")
        assert bill is not None
        assert bill.erp_record_id == ("99" if shared else "11")
        vendor = await state.get_binding("qbo", "acme:vendor-ref:ent_1")
        assert vendor is not None
        assert vendor.erp_record_id == "7"
        other = await state.get_binding("qbo", "beta:mercoa:bill:in_1")
        assert other is not None
        assert other.erp_record_id == "12"
        assert await state.count_bindings("qbo") == 3
    finally:
        await state.close()
