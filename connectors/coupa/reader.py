"""Coupa reader: reference data by ``updated_at[gt_or_eq]`` queries (Core API).

``GET /api/<resource>?updated_at[gt_or_eq]=<since>&order_by=updated_at&dir=asc&limit=<n>&offset=0``
through the connector's authenticated client (OAuth 2.0 client credentials, 25 requests/s;
``shared/reference/erp_apis.md`` §5). Query syntax from Compass "Arguments", "Querying Options"
and "API Operators" (``<attribute>[<operator>]=<value>``, dashes written as underscores,
``gt_or_eq``; ``limit`` / ``offset``, at most 50 records a request). Paging is keyset paging on
the change time (:mod:`ledgerflow.connectors.reference`): every page starts at offset 0 from the
cursor; a page of more than 50 is read in requests of 50 (``offset`` 0, 50, …).

=============  ==============  ====================================================================
kind           resource        fields → ReferenceRecord
=============  ==============  ====================================================================
vendor         suppliers       ``id`` → erp_id, ``number`` → code, ``name``, ``status``
                               ``inactive`` → inactive (Suppliers API)
gl_account     accounts        ``id``, ``code`` (the segments joined) → code, ``name``, ``active``;
                               only the connection's chart (``account_type[name]``, option
                               ``chart_of_accounts``) when set (Accounts API)
tax_rate       tax_codes       ``id``, ``code``, ``description`` → name, ``active``,
                               ``percentage`` in erp_record (Tax Code API)
tracking       lookup_values   ``id``, ``external-ref-num`` → code, ``name``, ``active``,
                               ``parent-id`` → parent_id (Lookup Values API: project / cost code
                               hierarchies of account segments)
=============  ==============  ====================================================================

``updated_at`` is ``updated-at`` (ISO 8601 with offset, converted to UTC), whole seconds.

Assumptions where ``shared/reference`` is silent (it lists the supplier and invoice endpoints
only): the resources and elements above are from Coupa Compass; ``order_by`` / ``dir`` sort the
list (ties in ``id`` order); the connection's OAuth client holds the read scopes of these
resources. Coupa is a P2P system: no customers; no projects resource is read (projects and cost
codes are lookup values).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from ledgerflow.connectors.base import InvalidResponse
from ledgerflow.connectors.coupa.connector import CoupaConnector
from ledgerflow.connectors.reference import ReferencePage, ReferenceReader, ReferenceSource, utc
from ledgerflow.contracts.reference import ReferenceRecord
from ledgerflow.core.outbound.client import loads_json

__all__ = ["CoupaReader"]

MAX_LIMIT = 50
"""Coupa answers at most 50 records a request."""


class CoupaReader(ReferenceReader):
    """Reads suppliers, accounts, tax codes and lookup values of one Coupa instance."""

    erp: ClassVar[str] = "coupa"
    sources: ClassVar[tuple[ReferenceSource, ...]] = (
        ReferenceSource("vendor", "suppliers"),
        ReferenceSource("gl_account", "accounts"),
        ReferenceSource("tax_rate", "tax_codes"),
        ReferenceSource("tracking", "lookup_values"),
    )

    def __init__(self, connector: CoupaConnector, *, page_size: int = 100) -> None:
        super().__init__(connector, page_size=page_size)
        self.coupa = connector
        chart = connector.config.options.get("chart_of_accounts")
        self.chart = str(chart) if chart else None

    def params(self, source: ReferenceSource, since: datetime | None, limit: int, offset: int) -> dict[str, str | int]:
        """The query arguments of one request (see the module docstring)."""
        params: dict[str, str | int] = {"order_by": "updated_at", "dir": "asc", "limit": limit, "offset": offset}
        if since is not None:
            params["updated_at[gt_or_eq]"] = utc(since).isoformat(timespec="seconds")
        if source.entity == "accounts" and self.chart:
            params["account_type[name]"] = self.chart
        return params

    async def read(self, source: ReferenceSource, since: datetime | None, limit: int) -> ReferencePage:
        """Up to ``limit`` records of ``source`` changed at or after ``since``, in requests of at most 50.

        Raises:
            RetriableError, PermanentError: as the connector's client raises them (a refused
                argument is a 400, permanent).
            InvalidResponse: the answer is not a JSON array of objects.
        """
        rows: list[dict[str, Any]] = []
        complete = False
        while len(rows) < limit:
            size = min(limit - len(rows), MAX_LIMIT)
            response = await self.coupa.client.request(
                "GET",
                f"/api/{source.entity}",
                operation=f"{source.entity}.read",
                params=self.params(source, since, size, len(rows)),
            )
            body = loads_json(response.content) if response.content else None
            if not isinstance(body, list):
                raise InvalidResponse(f"Coupa /api/{source.entity}: the answer is not a list")
            found = [row for row in body if isinstance(row, dict)]
            rows.extend(found)
            if len(found) < size:
                complete = True
                break
        return ReferencePage([self._record(source, row) for row in rows[:limit]], complete=complete)

    def _record(self, source: ReferenceSource, row: dict[str, Any]) -> ReferenceRecord:
        stamp = row.get("updated-at")
        try:
            updated = utc(datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))) if stamp else None
        except ValueError:
            raise InvalidResponse(f"Coupa /api/{source.entity}: malformed updated-at {stamp!r}") from None
        if source.entity == "suppliers":
            code, name, active = row.get("number"), row.get("name"), row.get("status") != "inactive"
        elif source.entity == "tax_codes":
            code, name, active = row.get("code"), row.get("description"), row.get("active") is not False
        elif source.entity == "lookup_values":
            code, name, active = row.get("external-ref-num"), row.get("name"), row.get("active") is not False
        else:
            code, name, active = row.get("code"), row.get("name"), row.get("active") is not False
        parent = row.get("parent-id")
        if row.get("id") is None:
            raise InvalidResponse(f"Coupa /api/{source.entity}: a record without id")
        return ReferenceRecord(
            kind=source.kind,
            erp=self.erp,
            connection=self.connection,
            entity=source.entity,
            erp_id=str(row["id"]),
            code=str(code) if code else None,
            name=str(name or code or row["id"]),
            active=active,
            updated_at=updated,
            parent_id=str(parent) if parent is not None else None,
            erp_record=row,
        )
