"""Settings of the audit service: the shared :class:`~ledgerflow.core.settings.Settings`, its address and OIDC."""

from __future__ import annotations

from pydantic import Field

from ledgerflow.audit.auth import OidcConfig
from ledgerflow.core.settings import Settings

__all__ = ["AuditSettings"]


class AuditSettings(Settings):
    """``LEDGERFLOW_*`` settings plus the audit service's address (``LEDGERFLOW_AUDIT_HOST`` / ``_PORT``) and OIDC.

    OIDC bearer tokens are accepted when ``LEDGERFLOW_AUDIT_OIDC_ISSUER`` and ``…_AUDIENCE`` are
    set (``…_JWKS_URL`` optional: discovered from the issuer otherwise;
    :class:`~ledgerflow.audit.auth.OidcConfig`); API keys always are.
    """

    audit_host: str = Field("0.0.0.0", description="Interface the sync-records API listens on.")  # noqa: S104
    audit_port: int = Field(8081, ge=0, le=65535, description="Port of the sync-records API (0 = any free port).")
    audit_concurrency: int = Field(
        8, ge=1, description="Records of different keys written at once per batch (1 on SQLite: one writer)."
    )
    audit_oidc_issuer: str | None = Field(None, description="OIDC issuer (`iss`) whose access tokens are accepted.")
    audit_oidc_audience: str | None = Field(None, description="Audience (`aud`) those tokens must carry.")
    audit_oidc_jwks_url: str | None = Field(
        None, description="The issuer's JWKS URL; unset = the `jwks_uri` of the issuer's discovery document."
    )
    audit_oidc_scope_claim: str = Field("scope", description="Claim holding the scopes (read, redrive, admin).")
    audit_oidc_tenants_claim: str = Field(
        "ledgerflow_tenants", description="Claim holding the tenants a token sees (`*` = every tenant)."
    )

    def oidc(self) -> OidcConfig | None:
        """The OIDC configuration, or None when the issuer or the audience is unset."""
        if not (self.audit_oidc_issuer and self.audit_oidc_audience):
            return None
        return OidcConfig(
            issuer=self.audit_oidc_issuer,
            audience=self.audit_oidc_audience,
            jwks_url=self.audit_oidc_jwks_url,
            scope_claim=self.audit_oidc_scope_claim,
            tenants_claim=self.audit_oidc_tenants_claim,
        )
