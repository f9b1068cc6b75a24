"""Typed ``options`` and ``credentials`` of a NetSuite connection (unknown keys are errors).

Options follow :mod:`ledgerflow.connectors.netsuite.mapping`; ids are NetSuite internal ids.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from ledgerflow.connectors.config import AccountId, OAuthCredentials, OAuthOptions

__all__ = ["Credentials", "Options"]


class Options(OAuthOptions):
    """NetSuite options."""

    default_expense_account: AccountId | None = Field(None, description="Expense account id for lines without one.")
    default_item: AccountId | None = Field(None, description="Item id for invoice lines without an item.")
    subsidiary_id: AccountId | None = Field(None, description="Subsidiary of every record (OneWorld accounts).")
    location_id: AccountId | None = Field(None, description="Location of every record.")
    currency_ids: dict[str, AccountId] | None = Field(None, description="ISO 4217 code → NetSuite currency id.")
    line_segments: dict[str, str] | None = Field(None, description="Canonical line field → NetSuite line field.")
    tax_account: AccountId | None = Field(None, description="Expense account id of a bill's tax line.")
    tax_item_id: AccountId | None = Field(None, description="Item id of an invoice's tax line.")
    shipping_account: AccountId | None = Field(None, description="Expense account id of a bill's shipping line.")
    shipping_item_id: AccountId | None = Field(None, description="Item id of an invoice's shipping line.")
    discount_account: AccountId | None = Field(None, description="Expense account id of a bill's discount.")
    discount_item_id: AccountId | None = Field(None, description="Item id of an invoice's discount line.")
    time_zone: str | None = Field(
        None,
        description="IANA time zone of the integration user, in which SuiteQL compares and formats "
        "timestamps (reference reader); UTC when unset.",
    )


class Credentials(OAuthCredentials):
    """NetSuite credentials: Token-Based Auth (the five TBA values) or OAuth 2.0 client credentials."""

    account_id: SecretStr | None = Field(None, description="NetSuite account id (also gives the API host).")
    consumer_key: SecretStr | None = Field(None, description="TBA consumer key (integration record).")
    consumer_secret: SecretStr | None = Field(None, description="TBA consumer secret.")
    token_id: SecretStr | None = Field(None, description="TBA token id (access token record).")
    token_secret: SecretStr | None = Field(None, description="TBA token secret.")
