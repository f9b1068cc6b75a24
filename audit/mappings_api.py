"""``/v1/mappings``: the operators' source code → ERP id tables, per tenant and connection (state store).

``GET /v1/mappings[?tenant=…&connection=…&kind=…]`` (read)
    Stored mappings of the tenants the caller sees.
``PUT /v1/mappings/{tenant}/{connection}/{kind}/{source_code}`` (admin), body ``{"erp_id": "…"}``, ``?force=true``
    Set one mapping. The ERP id is validated against the connection's reference cache
    (:meth:`ledgerflow.core.reference_cache.MappingStore.validate`): absent from a complete
    cache, inactive there, or of a kind never synced → ``409`` problem ``reference-unknown`` with
    the reason; ``force=true`` stores it anyway and answers the ``warning``.
``DELETE /v1/mappings/{tenant}/{connection}/{kind}/{source_code}`` (admin)
    Delete one mapping (``404`` when there is none).

A tenant the caller's key does not see answers ``404``, exactly like an unknown mapping. A PUT is
checked like ``ledgerflow mappings set`` (:mod:`ledgerflow.core.mapping_targets`, one check for
both): an unknown connection answers ``404``; a tenant that does not route to the connection
``409`` ``tenant-not-routed``; a kind the connection's connector does not use (QuickBooks
``tax_rate``: its tax codes are options) ``409`` ``mapping-kind-unused`` naming what it uses
instead. ``force`` does not override these: such a mapping could never apply.
The connector runtime applies a change within ``options.reference_refresh_seconds`` (10 s).
"""

# No ``from __future__ import annotations``: the routes' dependencies are closure variables that
# FastAPI could not resolve from postponed (string) annotations.
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from ledgerflow.audit.auth import Principal
from ledgerflow.core.mapping_targets import MappingTargetProblem
from ledgerflow.core.problems import Problem, problem_doc
from ledgerflow.core.reference_cache import MappingKind, MappingStore, StoredMapping
from ledgerflow.core.state import StateStore

__all__ = ["MappingIn", "MappingOut", "mappings_router"]

_NAME = r"^[^\x00-\x1f\x7f/]+$"
"""Tenants, connections and codes in a path: printable, no slash."""


class MappingIn(BaseModel):
    """The ERP id a source code is mapped to."""

    erp_id: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The ERP's id, or code where the ERP takes codes (Xero account Code, TaxType).",
    )


class MappingOut(BaseModel):
    """One stored mapping."""

    tenant: str = Field(description="Tenant whose records it applies to.")
    connection: str = Field(description="ERP connection.")
    kind: str = Field(description="Reference kind (canonical field): gl_account, tax_rate, vendor…")
    source_code: str = Field(description="The code or id the source sends.")
    erp_id: str = Field(description="The ERP id sent instead.")
    updated_at: datetime = Field(description="When it was last set.")
    updated_by: str | None = Field(description="Who set it (API key name, `cli:<user>`).")
    warning: str | None = Field(None, description="Set by a forced PUT: why the ERP id could not be confirmed.")

    @classmethod
    def of(cls, row: StoredMapping, warning: str | None = None) -> "MappingOut":
        """From a stored mapping."""
        return cls(
            tenant=row.tenant,
            connection=row.connection,
            kind=row.kind,
            source_code=row.source_code,
            erp_id=row.erp_id,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
            warning=warning,
        )


def _name(description: str) -> Any:
    return Path(min_length=1, max_length=200, pattern=_NAME, description=description)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request: a parameter or body field is invalid (detail says which).",
        401: "No credential, or an unknown, revoked or invalid one.",
        403: "The credential lacks the scope this operation needs.",
        404: "Unknown, or of a tenant the caller does not see.",
        409: "The tenant does not route to the connection (tenant-not-routed), the connection's connector does "
        "not use that kind (mapping-kind-unused), or the ERP id is not in the connection's reference cache, "
        "inactive there, or cannot be validated (reference-unknown; force=true stores it anyway).",
    }
    return {status: problem_doc(text[status]) for status in (400, 401, 403, *statuses)}


Dependency = Callable[[Principal], Awaitable[Principal]]
TargetCheck = Callable[[str, str, str | None], Awaitable[MappingTargetProblem | None]]
"""(tenant, connection, kind) → why no such mapping may be stored, or None (:mod:`ledgerflow.core.mapping_targets`)."""

Tenant = Annotated[str, _name("Tenant.")]
Connection = Annotated[str, _name("ERP connection.")]
Kind = Annotated[MappingKind, Path(description="Reference kind.")]
Code = Annotated[str, _name("The source code or id.")]


def mappings_router(state: StateStore, read: Dependency, admin: Dependency, target: TargetCheck) -> APIRouter:
    """The ``/mappings`` routes over ``state`` (include under the API prefix).

    Args:
        state: the state store holding the mapping tables and the reference cache.
        read: FastAPI dependency: the caller's principal if it holds the ``read`` scope.
        admin: the same for ``admin`` (writes).
        target: the check of a mapping's tenant, connection and kind (the composition's routing
            and the connectors' table of honoured kinds).
    """
    router = APIRouter()
    store = MappingStore(state)
    created = False

    async def mappings() -> MappingStore:
        nonlocal created
        if not created:
            await state.create_all()  # the state tables may not exist where only the audit ran yet
            created = True
        return store

    def visible(principal: Principal, tenant: str) -> None:
        if not principal.sees(tenant):
            raise Problem(404, "not-found", "Not found", f"no tenant {tenant!r}")

    @router.get("/mappings", summary="List stored mappings", responses=_problems(404))
    async def list_mappings(
        principal: Annotated[Principal, Depends(read)],
        tenant: Annotated[str | None, Query(max_length=200, pattern=_NAME, description="Tenant.")] = None,
        connection: Annotated[str | None, Query(max_length=200, pattern=_NAME, description="Connection.")] = None,
        kind: Annotated[MappingKind | None, Query(description="Reference kind.")] = None,
    ) -> list[MappingOut]:
        """Stored mappings of the tenants the caller sees, ordered by tenant, connection, kind, source code."""
        if tenant is not None:
            visible(principal, tenant)
        rows = await (await mappings()).list(
            tenant=tenant, connection=connection, kind=kind, tenants=principal.tenant_list()
        )
        return [MappingOut.of(row) for row in rows]

    @router.put(
        "/mappings/{tenant}/{connection}/{kind}/{source_code}",
        summary="Set one mapping",
        responses=_problems(404, 409),
    )
    async def put_mapping(
        principal: Annotated[Principal, Depends(admin)],
        tenant: Tenant,
        connection: Connection,
        kind: Kind,
        source_code: Code,
        body: Annotated[MappingIn, Body()],
        force: Annotated[bool, Query(description="Store an ERP id the reference cache cannot confirm.")] = False,
    ) -> MappingOut:
        """Map ``source_code`` to ``erp_id`` for ``kind`` on ``connection`` for ``tenant`` (validated: the cache)."""
        visible(principal, tenant)
        if problem := await target(tenant, connection, kind):
            raise Problem(problem.status, problem.type, problem.title, problem.detail)
        store = await mappings()
        verdict = await store.validate(connection, kind, body.erp_id, force=force)
        if not verdict.accepted:
            raise Problem(409, "reference-unknown", "ERP id not confirmed", verdict.reason or "refused")
        row = await store.put(tenant, connection, kind, source_code, body.erp_id, by=f"api:{principal.name}")
        return MappingOut.of(row, verdict.warning)

    @router.delete(
        "/mappings/{tenant}/{connection}/{kind}/{source_code}",
        status_code=204,
        summary="Delete one mapping",
        responses=_problems(404),
    )
    async def delete_mapping(
        principal: Annotated[Principal, Depends(admin)],
        tenant: Tenant,
        connection: Connection,
        kind: Kind,
        source_code: Code,
    ) -> Response:
        """Delete one mapping (the connection's YAML ``reference_map`` entry, if any, applies again)."""
        visible(principal, tenant)
        if not await (await mappings()).remove(tenant, connection, kind, source_code):
            raise Problem(404, "not-found", "Not found", f"no {kind} mapping of {source_code!r} for {tenant}")
        return Response(status_code=204)

    return router
