"""``/v1/mappings``: tenant-scoped by the API key, validated against the reference cache, problem+json errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ledgerflow.connectors.registry import mapping_kind_use
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.reference_cache import MappingStore, ReferenceCache
from ledgerflow.core.settings import Settings
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


def _settings(tmp_path: Path) -> Settings:
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "tenants:\n"
        "  acme: {sources: {}, connections: [xero-main, qbo-main]}\n"
        "  beta: {sources: {}, connections: [xero-main]}\n"
        "connections:\n"
        "  xero-main: {erp: xero}\n"
        "  qbo-main: {erp: quickbooks}\n"
        "  qbo-beta: {erp: quickbooks}\n",
        encoding="utf-8",
    )
    return Settings(routing_file=routing)


async def test_set_refuse_force_list_delete_and_tenant_isolation(tmp_path: Path) -> None:
    async with audit_api(tmp_path, settings=_settings(tmp_path), mapping_kinds=mapping_kind_use) as api:
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

            never_synced = await client.put("/v1/mappings/acme/qbo-main/gl_account/VAT20", json={"erp_id": "84"})
            assert never_synced.status_code == 409
            assert "no complete reference cache of gl_account" in never_synced.json()["detail"]
            forced = await client.put("/v1/mappings/acme/qbo-main/gl_account/VAT20?force=true", json={"erp_id": "84"})
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


async def test_a_mapping_that_could_never_apply_is_refused_whatever_force_says(tmp_path: Path) -> None:
    # Issue 19: the API checks the tenant routes to the connection (as the CLI does) and that the
    # connection's connector uses the kind; problem+json, like the API's other refusals.
    async with audit_api(tmp_path, settings=_settings(tmp_path), mapping_kinds=mapping_kind_use) as api:
        admin = await api.key(["admin"], ["acme"])
        async with api.client(admin) as client:
            unused = await client.put("/v1/mappings/acme/qbo-main/tax_rate/VAT20?force=true", json={"erp_id": "TAX"})
            assert unused.status_code == 409, unused.text
            assert unused.headers["content-type"] == "application/problem+json"
            assert unused.json()["type"].endswith("/mapping-kind-unused")
            detail = unused.json()["detail"]
            assert detail.startswith(
                "qbo-main: quickbooks books tax through the connection's options (options.tax_code"
            )
            assert "tax_rate mappings are not used" in detail

            not_routed = await client.put("/v1/mappings/acme/qbo-beta/gl_account/m?force=true", json={"erp_id": "84"})
            assert not_routed.status_code == 409, not_routed.text
            assert not_routed.json()["type"].endswith("/tenant-not-routed")
            assert "tenant 'acme' does not route to 'qbo-beta'" in not_routed.json()["detail"]

            unknown = await client.put("/v1/mappings/acme/nowhere/gl_account/m?force=true", json={"erp_id": "84"})
            assert unknown.status_code == 404
            assert "no connection named 'nowhere'" in unknown.json()["detail"]

            xero = await client.put("/v1/mappings/acme/xero-main/tax_rate/VAT20?force=true", json={"erp_id": "INPUT"})
            assert xero.status_code == 200, xero.text  # Xero books a line's tax rate as its TaxType
        state = StateStore(api.store.url)
        assert await MappingStore(state).tables("qbo-main") == {}
        assert await MappingStore(state).tables("qbo-beta") == {}
        await state.close()
