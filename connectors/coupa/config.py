"""Typed ``options`` and ``credentials`` of a Coupa connection (unknown keys are errors).

Options follow :mod:`ledgerflow.connectors.coupa.mapping`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ledgerflow.connectors.config import AccountId, OAuthCredentials, OAuthOptions

__all__ = ["Credentials", "Options"]


class Options(OAuthOptions):
    """Coupa options."""

    chart_of_accounts: str | None = Field(None, description="Chart of accounts the account segments belong to.")
    account_segments: dict[str, Any] | None = Field(
        None, description="How a canonical GL account becomes Coupa account segments."
    )
    default_expense_account: AccountId | None = Field(None, description="Account for lines without one.")
    discount_account: AccountId | None = Field(None, description="Account of a document discount.")


class Credentials(OAuthCredentials):
    """Coupa credentials: OAuth 2.0 client credentials (OIDC client of the Coupa instance)."""
