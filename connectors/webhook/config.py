"""Typed ``options`` and ``credentials`` of a generic HTTP connection (ERP kind ``http``; unknown keys are errors).

Options follow :mod:`ledgerflow.connectors.webhook.connector`.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from ledgerflow.connectors.config import ConnectionCredentials, ConnectionOptions

__all__ = ["Credentials", "Options"]


class Options(ConnectionOptions):
    """Options of the generic HTTP connector."""

    paths: dict[str, str] | None = Field(None, description="Canonical object type → request path.")
    body_template: str | None = Field(None, description="Jinja2 template of the request body (default: the record).")
    record_id_pointer: str | None = Field(None, description="JSON pointer of the ERP record id in the answer.")
    read_back_path: str | None = Field(
        None, description="Path of a booked record for read-back verification, e.g. /records/{record_id}."
    )
    read_back_pointer: str | None = Field(
        None, description="JSON pointer of the canonical document in the read-back answer (default /data)."
    )


class Credentials(ConnectionCredentials):
    """Credentials of the generic HTTP connector: the Standard Webhooks signing secret."""

    secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret (whsec_…) the requests are signed with."
    )
