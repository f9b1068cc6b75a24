"""On-demand reference sync through the sync-records API (issue 19): request a pass, see the last runs.

``POST /v1/connections/{name}/reference-sync`` (redrive)
    Asks the running sync-reference service for a pass of the connection now: writes a
    ``pending`` row to the state store's ``reference_sync_requests``
    (:mod:`ledgerflow.core.reference_runs`), which the service claims within about 2 s. Answers
    202 with the request id; ``GET …/reference-sync/{id}`` follows it.
``GET /v1/connections/{name}/reference-sync`` (read)
    The newest runs of the connection, scheduled and requested: status, started, finished,
    records published per kind, ERP reads, error.
``GET /v1/connections/{name}/reference-sync/{id}`` (read)
    One run or request.

A connection is known here when its ERP has a reader (the caller of :func:`create_app
<ledgerflow.audit.api.create_app>` passes those connections with their tenants); the caller
must see one of its tenants (a connection fed by no tenant: only callers of every tenant).
Anything else answers 404, as for records of a tenant the caller does not see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from ledgerflow.audit.api import API_PREFIX, _problems, require
from ledgerflow.audit.auth import Principal
from ledgerflow.core.problems import Problem
from ledgerflow.core.reference_runs import ReferenceRun, ReferenceRuns

__all__ = ["ReferenceRunOut", "ReferenceSyncAccepted", "reference_sync_router"]

ConnectionName = Annotated[
    str, Path(max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", description="ERP connection name (routing file).")
]
RunId = Annotated[str, Path(max_length=32, pattern=r"^[0-9a-f]+$", description="Run or request id.")]


class ReferenceRunOut(BaseModel):
    """One reference sync pass of a connection, or a request for one."""

    id: str = Field(description="Run (request) id.")
    connection: str = Field(description="ERP connection.")
    trigger: str = Field(description="`schedule` (the service's own), `api` or `cli` (on demand).")
    status: str = Field(description="`pending` (not claimed yet), `running`, `succeeded` or `failed`.")
    requested_at: datetime = Field(description="When it was requested (scheduled: when it started).")
    requested_by: str | None = Field(None, description="Key id or token subject of an API request.")
    started_at: datetime | None = Field(None, description="When the service started the pass.")
    finished_at: datetime | None = Field(None, description="When the pass ended.")
    counts: dict[str, int] = Field(
        default_factory=dict, description="Records published per kind (vendor, customer, gl_account, …)."
    )
    reads: int | None = Field(None, description="ERP reads the pass took.")
    error: str | None = Field(None, description="Why the pass failed (sources read before it kept their progress).")

    @classmethod
    def of(cls, run: ReferenceRun) -> ReferenceRunOut:
        """The API view of ``run``."""
        return cls(
            id=run.id,
            connection=run.connection,
            trigger=run.trigger,
            status=run.status,
            requested_at=run.requested_at,
            requested_by=run.requested_by,
            started_at=run.started_at,
            finished_at=run.finished_at,
            counts=run.counts,
            reads=run.reads,
            error=run.error,
        )


class ReferenceSyncAccepted(BaseModel):
    """A reference sync pass was requested; the running sync-reference service picks it up within seconds."""

    id: str = Field(description="Request id.")
    connection: str = Field(description="ERP connection.")
    status: str = Field(description="`pending`.")
    status_url: str = Field(description="Where to follow it.")


def reference_sync_router(
    runs: ReferenceRuns, connections: Mapping[str, Collection[str]]
) -> Callable[[APIRouter], None]:
    """A function adding the reference sync routes to the ``/v1`` router.

    Args:
        runs: the ``reference_sync_requests`` table (on the audit store's engine: same database).
        connections: connection with a reader → the tenants whose records go to it.
    """
    reader = Depends(require("read"))
    redriver = Depends(require("redrive"))

    def visible(principal: Principal, name: str) -> None:
        tenants = connections.get(name)
        if tenants is None:
            raise Problem(404, "not-found", "Not found", f"no connection {name!r} with a reference reader")
        if principal.tenants is not None and not any(principal.sees(t) for t in tenants):
            raise Problem(404, "not-found", "Not found", f"no connection {name!r} with a reference reader")

    def add(router: APIRouter) -> None:
        @router.post(
            "/connections/{name}/reference-sync",
            status_code=202,
            summary="Run the connection's reference sync now",
            responses=_problems(404),
        )
        async def request_reference_sync(
            name: ConnectionName, principal: Principal = redriver
        ) -> ReferenceSyncAccepted:
            """Ask the sync-reference service for a pass of this connection now (it looks every ~2 s)."""
            visible(principal, name)
            run_id = await runs.request(name, trigger="api", requested_by=principal.subject)
            return ReferenceSyncAccepted(
                id=run_id,
                connection=name,
                status="pending",
                status_url=f"{API_PREFIX}/connections/{name}/reference-sync/{run_id}",
            )

        @router.get(
            "/connections/{name}/reference-sync",
            summary="Last reference sync runs of the connection",
            responses=_problems(404),
        )
        async def list_reference_syncs(
            name: ConnectionName,
            principal: Principal = reader,
            limit: Annotated[int, Query(ge=1, le=50, description="Runs, newest first.")] = 20,
        ) -> list[ReferenceRunOut]:
            """The newest runs (scheduled and requested), newest first."""
            visible(principal, name)
            return [ReferenceRunOut.of(r) for r in await runs.recent(name, limit)]

        @router.get(
            "/connections/{name}/reference-sync/{run_id}",
            summary="One reference sync run or request",
            responses=_problems(404),
        )
        async def get_reference_sync(
            name: ConnectionName, run_id: RunId, principal: Principal = reader
        ) -> ReferenceRunOut:
            """The run (or request) ``run_id`` of this connection."""
            visible(principal, name)
            found = await runs.get(run_id)
            if found is None or found.connection != name:
                raise Problem(404, "not-found", "Not found", f"no reference sync {run_id} of {name!r}")
            return ReferenceRunOut.of(found)

    return add
