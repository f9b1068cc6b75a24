"""Typed ``options`` and ``credentials`` of a Xero connection (unknown keys are errors).

Options follow :mod:`ledgerflow.connectors.xero.connector`; account codes are Xero ``Code`` values
or ``AccountID`` UUIDs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from ledgerflow.connectors.config import AccountId, OAuthCredentials, OAuthOptions

__all__ = ["Credentials", "Options"]


class Options(OAuthOptions):
    """Xero options."""

    create_vendors: bool = Field(False, description="Create a supplier Contact that does not exist yet.")
    create_customers: bool = Field(False, description="Create a customer Contact that does not exist yet.")
    default_expense_account: AccountId | None = Field(None, description="Account code for bill lines without one.")
    default_revenue_account: AccountId | None = Field(None, description="Account code for invoice lines without one.")
    default_bank_account: AccountId | None = Field(None, description="Bank account code or AccountID of payments.")
    default_tax_type: str | None = Field(None, description="TaxType for lines without a tax code.")
    no_tax_type: str | None = Field(None, description="TaxType of an untaxed line (default NONE).")
    tax_account: AccountId | None = Field(None, description="Account code of a tax line.")
    shipping_account: AccountId | None = Field(None, description="Account code of a shipping line.")
    discount_account: AccountId | None = Field(None, description="Account code of a document discount.")
    tracking_categories: dict[Literal["cost_code", "project", "business_unit"], str] | None = Field(
        None,
        description="Xero tracking category (its name) of each tracked line reference, e.g. "
        "{cost_code: Cost Code, project: Project}; at most two per line.",
    )


class Credentials(OAuthCredentials):
    """Xero credentials: the organisation and the OAuth 2.0 app."""

    tenant_id: SecretStr | None = Field(None, description="Xero organisation (xero-tenant-id).")
    access_token: SecretStr | None = Field(None, description="A current access token (tests and sandboxes).")
