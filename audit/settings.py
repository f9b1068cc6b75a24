"""Settings of the audit service: the shared :class:`~ledgerflow.core.settings.Settings` plus its API port."""

from __future__ import annotations

from pydantic import Field

from ledgerflow.core.settings import Settings

__all__ = ["AuditSettings"]


class AuditSettings(Settings):
    """``LEDGERFLOW_*`` settings plus ``LEDGERFLOW_AUDIT_HOST`` / ``LEDGERFLOW_AUDIT_PORT`` (the sync-records API)."""

    audit_host: str = Field("0.0.0.0", description="Interface the sync-records API listens on.")  # noqa: S104
    audit_port: int = Field(8081, ge=0, le=65535, description="Port of the sync-records API (0 = any free port).")
    audit_concurrency: int = Field(
        8, ge=1, description="Records of different keys written at once per batch (1 on SQLite: one writer)."
    )
