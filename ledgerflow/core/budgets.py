"""Per-connection ERP request budgets shared by every process through the state store.

An ERP's quota is the organisation's (Xero: 60 calls/min and 5,000/day per tenant; QuickBooks:
500/min per realm), not a process's: with N connector-fleet replicas and the sync-reference service
reading the same connection, per-process budgets add up to N+1 times the quota. With
``LEDGERFLOW_SHARED_BUDGETS=true`` every ERP request first takes one unit from fixed-window
counters in the state store's ``connection_budgets`` table (one row per connection: the current
minute and the current UTC day, each with its start and count), in **one statement**::

    INSERT … VALUES (connection, minute, 1, day, 1)
    ON CONFLICT (connection) DO UPDATE SET <count+1, or 1 when the window rolled over>
    WHERE <each window rolled over or is below its limit>
    RETURNING minute_count, day_count

No row returned: the budget is spent; a second read says which window and when it resets
(:class:`Refusal`). PostgreSQL serialises concurrent upserts of one row and re-checks the ``WHERE``
on the latest version, so all processes together never exceed a window's limit; SQLite has a
single writer. Window starts come from the callers' clocks (NTP-synchronised pods): a window only
moves forward, so a lagging clock counts into the current window instead of resetting it.
Fixed windows may grant up to twice the per-minute limit across a minute boundary; the in-process
token bucket (:mod:`ledgerflow.connectors.limits`) smooths within a process, this counter is the cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import case, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ledgerflow.core.state import BudgetRow

__all__ = ["DAY_SECONDS", "MINUTE_SECONDS", "Refusal", "SharedBudget"]

MINUTE_SECONDS = 60
"""Length of the per-minute window (seconds)."""
DAY_SECONDS = 86_400
"""Length of the per-day window (seconds; windows start at UTC midnight)."""

_UNLIMITED = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the shared budget refused: ``reason`` names the spent window, ``until`` (epoch seconds) its reset."""

    reason: Literal["shared_minute", "shared_day"]
    until: float


class SharedBudget:
    """Fixed-window per-connection counters in the state store (see the module docstring).

    Args:
        engine: the state store's engine (PostgreSQL in production, SQLite in single-process setups).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        table: Any = BudgetRow.__table__
        self._table = table
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    async def acquire(self, connection: str, *, per_minute: float, per_day: int | None, now: float) -> Refusal | None:
        """Take one request of ``connection`` from its current minute and UTC day; None when granted.

        Args:
            connection: connection name (the row's key).
            per_minute: requests per minute of the connection, all processes together (floored; at least 1).
            per_day: requests per UTC day (None: no daily limit).
            now: epoch seconds of the caller's clock.

        Returns:
            None when granted (counted), else the :class:`Refusal` saying which window is spent and
            when it resets (nothing counted).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the state store cannot be reached.
        """
        minute_limit = max(1, math.floor(per_minute))
        day_limit = per_day if per_day is not None else _UNLIMITED
        minute = int(now // MINUTE_SECONDS) * MINUTE_SECONDS
        day = int(now // DAY_SECONDS) * DAY_SECONDS
        table = self._table
        stmt = self._insert(table).values(
            connection=connection, minute_start=minute, minute_count=1, day_start=day, day_count=1
        )
        new = stmt.excluded
        upsert = stmt.on_conflict_do_update(
            index_elements=[table.c.connection],
            set_={
                "minute_count": case((new.minute_start > table.c.minute_start, 1), else_=table.c.minute_count + 1),
                "minute_start": case(
                    (new.minute_start > table.c.minute_start, new.minute_start), else_=table.c.minute_start
                ),
                "day_count": case((new.day_start > table.c.day_start, 1), else_=table.c.day_count + 1),
                "day_start": case((new.day_start > table.c.day_start, new.day_start), else_=table.c.day_start),
            },
            where=((new.minute_start > table.c.minute_start) | (table.c.minute_count < minute_limit))
            & ((new.day_start > table.c.day_start) | (table.c.day_count < day_limit)),
        ).returning(table.c.minute_count)
        async with self.engine.begin() as conn:
            granted = (await conn.execute(upsert)).first()
            if granted is not None:
                return None
            row = (
                await conn.execute(
                    select(table.c.minute_start, table.c.minute_count, table.c.day_start, table.c.day_count).where(
                        table.c.connection == connection
                    )
                )
            ).one()
        if row.day_start >= day and row.day_count >= day_limit:
            return Refusal("shared_day", float(row.day_start + DAY_SECONDS))
        return Refusal("shared_minute", float(max(row.minute_start, minute) + MINUTE_SECONDS))

    async def used(self, connection: str) -> tuple[int, int]:
        """Requests of ``connection`` counted in its last minute and day windows ((0, 0): none yet)."""
        table = self._table
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(table.c.minute_count, table.c.day_count).where(table.c.connection == connection)
                )
            ).first()
        return (0, 0) if row is None else (int(row.minute_count), int(row.day_count))
