"""Typed ``options`` and ``credentials`` of a QuickBooks Online connection (unknown keys are errors).

Options follow :mod:`ledgerflow.connectors.quickbooks.connector`; ids are QuickBooks ``Id``
values of the company (``realm_id``).
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from ledgerflow.connectors.config import AccountId, OAuthCredentials, OAuthOptions

__all__ = ["Credentials", "Options"]


class Options(OAuthOptions):
    """QuickBooks Online options."""

    create_vendors: bool = Field(
        False, description="Create a Vendor that does not exist yet (else reference.unresolved)."
    )
    create_customers: bool = Field(False, description="Create a Customer that does not exist yet.")
    default_expense_account: AccountId | None = Field(None, description="Account Id for lines without a GL account.")
    default_item: AccountId | None = Field(None, description="Item Id for invoice lines without an item.")
    default_bank_account: AccountId | None = Field(
        None, description="Account Id payments are deposited to or paid from."
    )
    tax_account: AccountId | None = Field(None, description="Account Id of the tax line of a bill.")
    tax_item: AccountId | None = Field(None, description="Item Id of the tax line of an invoice.")
    tax_code: AccountId | None = Field(None, description="TaxCode Id for tax-inclusive documents.")
    taxable_line_code: AccountId | None = Field(
        None, description="TaxCode of a taxed line (default TAX, US companies)."
    )
    exempt_line_code: AccountId | None = Field(
        None, description="TaxCode of an untaxed line (default NON, US companies)."
    )
    shipping_account: AccountId | None = Field(None, description="Account Id of the shipping line of a bill.")
    shipping_item: AccountId | None = Field(None, description="Item Id of the shipping line of an invoice.")
    discount_account: AccountId | None = Field(None, description="Account Id of a document discount.")
    batch_rate_limit_per_minute: float | None = Field(
        None,
        gt=0,
        description="Batch requests per minute (default 40, Intuit's limit per company; "
        "40/500 of rate_limit_per_minute when that is set).",
    )


class Credentials(OAuthCredentials):
    """QuickBooks Online credentials: the company and the OAuth 2.0 app (authorization-code flow)."""

    realm_id: SecretStr | None = Field(None, description="QuickBooks company id (realmId).")
    access_token: SecretStr | None = Field(None, description="A current access token (tests and sandboxes).")
