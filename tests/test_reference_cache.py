"""The reference cache and the mapping tables on SQLite and PostgreSQL (ledgerflow/core/reference_cache.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.reference_cache import MappingStore, ReferenceCache
from ledgerflow.core.state import StateStore
from tests.databases import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path}/state.db"
        else:
            url = await stack.enter_async_context(fresh_database())
        store = StateStore(url)
        stack.push_async_callback(store.close)
        await store.create_all()
        yield store


def _rate(erp_id: str, *, active: bool = True) -> ReferenceRecord:
    return ReferenceRecord(
        kind="tax_rate",
        erp="xero",
        connection="x",
        entity="TaxRate",
        erp_id=erp_id,
        code=erp_id,
        name=f"rate {erp_id}",
        active=active,
        erp_record={},
    )


def _category(options: list[tuple[str, str, str]]) -> ReferenceRecord:
    return ReferenceRecord(
        kind="tracking",
        erp="xero",
        connection="x",
        entity="TrackingCategory",
        erp_id="cat-1",
        name="Cost Code",
        active=True,
        erp_record={
            "TrackingCategoryID": "cat-1",
            "Name": "Cost Code",
            "Options": [{"TrackingOptionID": i, "Name": n, "Status": s} for i, n, s in options],
        },
    )


async def test_snapshot_writes_replace_and_keep_the_cursor_in_the_same_transaction(state: StateStore) -> None:
    cache = ReferenceCache(state)
    await cache.write("x", "tax_rate", "TaxRate", [_rate("INPUT"), _rate("OUTPUT")], cursor=("c", "1"), replace=True)
    assert not await cache.is_complete("x", "tax_rate", "TaxRate")
    await cache.write("x", "tax_rate", "TaxRate", [_rate("INPUT", active=False)], complete=True, replace=True)
    found = await cache.find("x", ["tax_rate"], ids=["INPUT", "OUTPUT"])
    assert [(r.erp_id, r.active) for r in found] == [("INPUT", False)]  # OUTPUT left the ERP's list
    assert await cache.is_complete("x", "tax_rate", "TaxRate")
    assert await state.get_cursor("c") == "1"

    await cache.write(
        "x", "tracking", "TrackingCategory", [_category([("o1", "North", "ACTIVE"), ("o2", "South", "ARCHIVED")])]
    )
    options = await cache.find("x", ["tracking"], names=["North", "South"])
    assert sorted((r.entity, r.name, r.active, r.parent_id) for r in options) == [
        ("TrackingOption", "North", True, "cat-1"),
        ("TrackingOption", "South", False, "cat-1"),
    ]
    await cache.write("x", "tracking", "TrackingCategory", [_category([("o1", "North", "ACTIVE")])], replace=True)
    assert await cache.count("x", "tracking") == 2  # the category and its one option left


async def test_mappings_round_trip_and_validation(state: StateStore) -> None:
    store = MappingStore(state)
    refused = await store.validate("x", "tax_rate", "INPUT")
    assert not refused.accepted
    assert "x has no complete reference cache of tax_rate" in (refused.reason or "")
    forced = await store.validate("x", "tax_rate", "INPUT", force=True)
    assert forced.accepted
    assert forced.warning is not None

    await ReferenceCache(state).write("x", "tax_rate", "TaxRate", [_rate("INPUT")], complete=True)
    assert (await store.validate("x", "tax_rate", "INPUT")).accepted
    assert not (await store.validate("x", "tax_rate", "VAT99")).accepted
    item = await store.validate("x", "item", "SKU-1")
    assert not item.accepted
    assert "no reader reads items" in (item.reason or "")

    await store.put("acme", "x", "tax_rate", "vat20", "INPUT", by="t")
    await store.put_many("acme", "x", [("tax_rate", "vat20", "OUTPUT"), ("gl_account", "m", "400")])
    await store.put("beta", "x", "tax_rate", "vat20", "INPUT")
    assert await store.tables("x") == {
        "acme": {"tax_rate": {"vat20": "OUTPUT"}, "gl_account": {"m": "400"}},
        "beta": {"tax_rate": {"vat20": "INPUT"}},
    }
    assert [m.tenant for m in await store.list(tenants=["beta"])] == ["beta"]
    assert await store.remove("acme", "x", "tax_rate", "vat20")
    assert not await store.remove("acme", "x", "tax_rate", "vat20")
    with pytest.raises(ValueError, match="unknown mapping kind"):
        await store.put("acme", "x", "colour", "red", "1")


async def test_create_all_adds_the_erp_column_to_an_earlier_reference_cache_status(state: StateStore) -> None:
    # A state database created before reference_cache_status had its erp column (issue 19).
    async with state.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE reference_cache_status DROP COLUMN erp"))
    await state.create_all()
    cache = ReferenceCache(state)
    await cache.write("x", "tax_rate", "TaxRate", [_rate("INPUT")], complete=True)
    assert (await cache.status("x"))[("tax_rate", "TaxRate")].erp == "xero"
    assert (await MappingStore(state).validate("x", "tax_rate", "INPUT")).accepted
