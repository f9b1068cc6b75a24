"""``/v1/mappings``: tenant-scoped by the API key, validated against the reference cache, problem+json errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.reference_cache import MappingStore, ReferenceCache
from ledgerflow.core.state import StateStore
from tests.audit.api_helpers import audit_api


def _account(code: str) -> ReferenceRecord:
    return ReferenceRecord(
        kind="gl_account",
        erp="xero",
        connection="xero-main",
        entity="Account",
        erp_id=f"id-{code}",
        code=code,
        name=f"Account {code}",
        active=True,
        updated_at=datetime(2026, 11, 1, tzinfo=UTC),
        erp_record={},
    )


async def test_set_refuse_force_list_delete_and_tenant_isolation(tmp_path: Path) -> None:
    async with audit_api(tmp_path) as api:
        state = StateStore(api.store.url)
        await state.create_all()
        await ReferenceCache(state).write("xero-main", "gl_account", "Account", [_account("400")], complete=True)

        admin_acme = await api.key(["admin"], ["acme"], name="ops-acme")
        reader_beta = await api.key(["read"], ["beta"])
        reader_acme = await api.key(["read"], ["acme"])
        path = "/v1/mappings/acme/xero-main/gl_account"

        async with api.client(admin_acme) as client:
            ok = await client.put(f"{path}/materials", json={"erp_id": "400"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["updated_by"] == "api:ops-acme"
            assert ok.json()["warning"] is None

            refused = await client.put(f"{path}/travel", json={"erp_id": "6999"})
            assert refused.status_code == 409
            assert refused.headers["content-type"] == "application/problem+json"
            assert "GL account 6999 is not in xero-main's chart of accounts" in refused.json()["detail"]

            never_synced = await client.put("/v1/mappings/acme/qbo-main/tax_rate/VAT20", json={"erp_id": "TAX"})
            assert never_synced.status_code == 409
            assert "no complete reference cache of tax_rate" in never_synced.json()["detail"]
            forced = await client.put("/v1/mappings/acme/qbo-main/tax_rate/VAT20?force=true", json={"erp_id": "TAX"})
            assert forced.status_code == 200, forced.text
            assert "stored unvalidated (force)" in forced.json()["warning"]

            other = await client.put("/v1/mappings/beta/xero-main/gl_account/materials", json={"erp_id": "400"})
            assert other.status_code == 404  # a tenant the key does not see: as if it did not exist
            bad_kind = await client.put("/v1/mappings/acme/xero-main/colour/red", json={"erp_id": "400"})
            assert bad_kind.status_code == 400

        # What the API stored is what the runtime reads.
        tables = await MappingStore(state).tables("xero-main")
        assert tables == {"acme": {"gl_account": {"materials": "400"}}}
        await MappingStore(state).put("beta", "xero-main", "gl_account", "materials", "429")

        async with api.client(reader_acme) as client:
            listed = await client.get("/v1/mappings")
            assert [(m["tenant"], m["connection"], m["source_code"]) for m in listed.json()] == [
                ("acme", "qbo-main", "VAT20"),
                ("acme", "xero-main", "materials"),
            ]
            assert (await client.get("/v1/mappings?tenant=beta")).status_code == 404
            assert (await client.delete(f"{path}/materials")).status_code == 403  # read scope only
        async with api.client(reader_beta) as client:
            beta = (await client.get("/v1/mappings")).json()
            assert [(m["tenant"], m["erp_id"]) for m in beta] == [("beta", "429")]

        async with api.client(admin_acme) as client:
            assert (await client.delete(f"{path}/materials")).status_code == 204
            gone = await client.delete(f"{path}/materials")
            assert gone.status_code == 404
            assert gone.headers["content-type"] == "application/problem+json"
            assert (await client.delete("/v1/mappings/beta/xero-main/gl_account/materials")).status_code == 404
        assert await MappingStore(state).tables("xero-main") == {"beta": {"gl_account": {"materials": "429"}}}
        await state.close()
