"""The audit store: migrations on SQLite and PostgreSQL, idempotent ingestion, filters, cursor pages."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from ledgerflow.audit.masking import mask_text, mask_tree
from ledgerflow.audit.migrate import alembic_config, upgrade
from ledgerflow.audit.store import (
    AuditStore,
    DeadLetterFilter,
    DeadLetterIn,
    InvalidCursorError,
    RecordFilter,
    SourceDocumentIn,
)
from ledgerflow.audit.tables import AuditBase, sync_record_id
from ledgerflow.contracts import ErrorInfo, Outcome
from tests.audit.audit_helpers import T0, MakeResult


async def _schema_report(url: str) -> tuple[set[str], list[object], str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def inspect_sync(sync_conn: Connection) -> tuple[set[str], list[object]]:
                tables = set(inspect(sync_conn).get_table_names())
                ctx = MigrationContext.configure(
                    sync_conn, opts={"compare_type": True, "version_table": "ledgerflow_audit_version"}
                )
                return tables, compare_metadata(ctx, AuditBase.metadata)

            tables, diff = await conn.run_sync(inspect_sync)
            version = (await conn.execute(text("select version_num from ledgerflow_audit_version"))).scalar_one()
    finally:
        await engine.dispose()
    return tables, diff, version


async def test_migrations_on_sqlite(sqlite_url: str, make_result: MakeResult) -> None:
    await _check_migrations(sqlite_url, make_result)


@pytest.mark.postgres
async def test_migrations_on_postgres(postgres_url: str, make_result: MakeResult) -> None:
    await _check_migrations(postgres_url, make_result)


async def _check_migrations(url: str, make_result: MakeResult) -> None:
    await upgrade(url)
    await upgrade(url)  # idempotent: already at head
    tables, diff, version = await _schema_report(url)
    assert {
        "sync_records",
        "sync_attempts",
        "canonical_records",
        "dead_letters",
        "api_keys",
        "ledgerflow_audit_version",
    } <= tables
    # One linear history, applied up to its single head.
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert diff == [], f"models and migrations disagree: {diff}"

    store = AuditStore(url)
    try:
        amount = Decimal("12345678901234.123456")  # more digits than a float holds
        assert await store.ingest(make_result(1, amount=amount), "r-1")
        assert not await store.ingest(make_result(1, amount=amount), "r-1")
        got = await store.get_record(sync_record_id("mercoa:bill:in_1", "qbo-main"))
        assert got is not None
        record, attempts = got
        assert record.amount == amount
        assert isinstance(record.amount, Decimal)
        assert record.attempt_count == 1
        assert len(attempts) == 1
        assert record.first_attempt_at.tzinfo is not None
    finally:
        await store.close()


async def test_ingestion_is_idempotent_and_keeps_the_latest_outcome(store: AuditStore, make_result: MakeResult) -> None:
    failed = make_result(1, outcome=Outcome.FAILED, minutes=0)
    succeeded = make_result(1, outcome=Outcome.SUCCEEDED, minutes=5)
    assert await store.ingest(succeeded, "r-2")
    assert await store.ingest(failed, "r-1")  # arrives late: older attempt
    assert not await store.ingest(failed, "r-1")
    assert not await store.ingest(succeeded, "r-2")
    assert await store.count("sync_attempts") == 2
    assert await store.count("sync_records") == 1
    record, attempts = await store.get_record(sync_record_id("mercoa:bill:in_1", "qbo-main")) or (None, [])
    assert record is not None
    assert record.outcome == "succeeded"
    assert record.erp_record_id == "101"
    assert record.attempt_count == 2
    assert record.first_attempt_at == T0
    assert record.last_attempt_at == T0 + timedelta(minutes=5)
    assert [a.outcome for a in attempts] == ["failed", "succeeded"]
    assert attempts[0].error_code == "erp.validation"
    assert attempts[0].http_status == 400

    # A later failure becomes the outcome but keeps the ERP id known from the success.
    later = make_result(1, outcome=Outcome.FAILED, minutes=9)
    assert await store.ingest(later, "r-3")
    record, _ = await store.get_record(record.id) or (None, [])
    assert record is not None
    assert record.outcome == "failed"
    assert record.erp_record_id == "101"
    assert record.attempt_count == 3


async def test_filters_and_cursor_pages_have_no_gaps_or_duplicates(store: AuditStore, make_result: MakeResult) -> None:
    for n in range(23):
        connection, erp = ("xero-main", "xero") if n % 3 == 0 else ("qbo-main", "quickbooks")
        outcome = Outcome.FAILED if n % 4 == 0 else Outcome.SUCCEEDED
        tenant = "globex" if n % 5 == 0 else "acme"
        await store.ingest(
            make_result(n, connection=connection, erp=erp, outcome=outcome, tenant=tenant, minutes=n), f"r-{n}"
        )
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await store.list_records(RecordFilter(), limit=5, cursor=cursor)
        seen += [r.id for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 23
    assert len(set(seen)) == 23

    xero_failed = await store.list_records(RecordFilter(erp="xero", outcome="failed"), limit=500)
    expected = {n for n in range(23) if n % 3 == 0 and n % 4 == 0}
    assert {r.canonical_id for r in xero_failed.records} == {f"mercoa:bill:in_{n}" for n in expected}
    window = await store.list_records(
        RecordFilter(tenant="acme", since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=20)), limit=500
    )
    assert {r.canonical_id for r in window.records} == {f"mercoa:bill:in_{n}" for n in range(10, 20) if n % 5}
    with pytest.raises(InvalidCursorError):
        await store.list_records(RecordFilter(), cursor="not-a-cursor")


def test_masking_keeps_last_four_of_bank_numbers_and_tokens() -> None:
    text_in = "Bank account 000123456789 (routing 021000021) rejected; Authorization: Bearer sk_abcdefgh12345678"
    masked = mask_text(text_in)
    assert "000123456789" not in masked
    assert "****6789" in masked
    assert "021000021" not in masked
    assert "****0021" in masked
    assert "sk_abcdefgh12345678" not in masked
    assert "Bearer ****5678" in masked
    assert mask_text("Amount 1234.56 on 2026-11-22, QuickBooks error 6240") == (
        "Amount 1234.56 on 2026-11-22, QuickBooks error 6240"
    )
    tree = mask_tree({"bank": {"account_number": "99887766", "account_number_last4": "7766", "iban": 12345}})
    assert tree == {"bank": {"account_number": "****7766", "account_number_last4": "7766", "iban": "****2345"}}


@pytest.mark.postgres
async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    import asyncio

    from ledgerflow.audit.migrate import upgrade

    await asyncio.gather(*(upgrade(postgres_url) for _ in range(3)))
    await upgrade(postgres_url)


@pytest.mark.postgres
async def test_nul_characters_never_poison_the_audit_on_postgres(postgres_url: str, make_result: MakeResult) -> None:
    """PostgreSQL refuses NUL in text: a dead letter or an ERP answer carrying one is still stored."""
    await upgrade(postgres_url)
    store = AuditStore(postgres_url)
    try:
        letter = DeadLetterIn(
            stage="transform",
            topic="ledgerflow.dlq.transform",
            partition=0,
            offset=1,
            timestamp=T0,
            key=b"k\x00",
            value=b"\x00\xff",
            headers={"ce_id": "e\x00", "ce_tenant": "acme\x00", "ledgerflow_dlq_detail": "bad \x00 byte"},
        )
        assert await store.put_dead_letter(letter)
        (row,) = (await store.list_dead_letters(DeadLetterFilter())).dead_letters
        assert row.detail == "bad \ufffd byte"
        assert row.value == b"\x00\xff"  # the bytes themselves are kept exactly, for replay
        error = ErrorInfo(code="erp.validation", message="ERP said \x00", retriable=False)
        assert await store.ingest(make_result(1, outcome=Outcome.FAILED, error=error), "r-nul\x00")
        source = SourceDocumentIn(
            source="mercoa",
            topic="ledgerflow.raw.mercoa",
            partition=0,
            offset=1,
            timestamp=T0,
            key=None,
            value=b"{}",
            headers={"ce_id": "w\x00", "ce_tenant": "acme"},
        )
        assert await store.put_source_document(source)
    finally:
        await store.close()
