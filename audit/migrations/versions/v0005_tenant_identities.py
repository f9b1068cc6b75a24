"""Tenant in every identity: move audit rows keyed by a canonical id without the tenant.

Canonical ids became ``<tenant>:<source>:<object>:<source id>``; rows written before carry
``<source>:<object>:<source id>`` (:func:`ledgerflow.contracts.is_legacy_key`). This revision moves
them, using each row's own ``tenant`` column:

* ``sync_records``: the canonical id gets its tenant in front and the row its new deterministic id
  (:func:`ledgerflow.audit.tables.sync_record_id` of the new canonical id); the row is copied under
  the new id, its ``sync_attempts`` re-pointed, then the old row deleted (no foreign key is ever
  left dangling, on SQLite or PostgreSQL);
* ``canonical_records``: the key, the body's ``canonical_id`` (and a payment's
  ``applied_to[].document_canonical_id``) and the ``ce_subject`` header get the tenant, so a
  re-drive publishes the record under its new id.

Downgrade strips the tenant again from keys that have it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from ledgerflow.contracts import is_legacy_key, tenant_scoped
from ledgerflow.contracts.events import deterministic_id

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_records = sa.table(
    "sync_records", sa.column("id", sa.String), sa.column("canonical_id", sa.String), sa.column("tenant", sa.String)
)
_attempts = sa.table("sync_attempts", sa.column("sync_record_id", sa.String))
_canonical = sa.table(
    "canonical_records",
    sa.column("canonical_id", sa.String),
    sa.column("tenant", sa.String),
    sa.column("headers", sa.JSON),
    sa.column("body", sa.Text),
)


def _record_id(canonical_id: str, connection: str) -> str:
    """``sync_record_id`` as of this revision (frozen here: a later change must not alter history)."""
    return deterministic_id("sync-record", canonical_id, connection)


def _strip(tenant: str, key: str) -> str:
    prefix = f"{tenant}:"
    rest = key[len(prefix) :] if key.startswith(prefix) else key
    return rest if is_legacy_key(rest) else key


def _move_sync_records(rekey: Callable[[str, str], str]) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT * FROM sync_records")).mappings().all()
    for row in rows:
        new_canonical = rekey(row["tenant"], row["canonical_id"])
        if new_canonical == row["canonical_id"]:
            continue
        new_id = _record_id(new_canonical, row["connection"])
        copy: dict[str, Any] = {**row, "id": new_id, "canonical_id": new_canonical}
        columns = ", ".join(f'"{c}"' for c in copy)
        params = ", ".join(f":{c}" for c in copy)
        bind.execute(sa.text(f"INSERT INTO sync_records ({columns}) VALUES ({params})"), copy)  # noqa: S608
        bind.execute(_attempts.update().where(_attempts.c.sync_record_id == row["id"]).values(sync_record_id=new_id))
        bind.execute(_records.delete().where(_records.c.id == row["id"]))


def _rekey_body(body: str, tenant: str, rekey: Callable[[str, str], str]) -> str:
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(record, dict):
        return body
    if isinstance(record.get("canonical_id"), str):
        record["canonical_id"] = rekey(tenant, record["canonical_id"])
    for applied in record.get("applied_to") or []:
        if isinstance(applied, dict) and isinstance(applied.get("document_canonical_id"), str):
            applied["document_canonical_id"] = rekey(tenant, applied["document_canonical_id"])
    return orjson.dumps(record).decode()


def _move_canonical_records(rekey: Callable[[str, str], str]) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_canonical)).mappings().all()
    for row in rows:
        tenant = row["tenant"]
        new_canonical = rekey(tenant, row["canonical_id"])
        if new_canonical == row["canonical_id"]:
            continue
        headers = dict(row["headers"] or {})
        if "ce_subject" in headers:
            headers["ce_subject"] = rekey(tenant, headers["ce_subject"])
        bind.execute(
            _canonical.update()
            .where(_canonical.c.canonical_id == row["canonical_id"])
            .values(canonical_id=new_canonical, headers=headers, body=_rekey_body(row["body"], tenant, rekey))
        )


def upgrade() -> None:
    """Put the tenant into every canonical id of ``sync_records`` and ``canonical_records``."""
    _move_sync_records(tenant_scoped)
    _move_canonical_records(tenant_scoped)


def downgrade() -> None:
    """Take the tenant out of canonical ids again (sync record ids follow)."""
    _move_sync_records(_strip)
    _move_canonical_records(_strip)
