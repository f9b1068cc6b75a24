"""Typed ``options`` and ``credentials`` of a SAP S/4HANA Cloud connection (unknown keys are errors).

Options follow :mod:`ledgerflow.connectors.sap.mapping`; codes are SAP codes (company code, G/L account, tax code).
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from ledgerflow.connectors.config import AccountId, OAuthCredentials, OAuthOptions

__all__ = ["Credentials", "Options"]


class Options(OAuthOptions):
    """SAP S/4HANA Cloud options."""

    company_code: str | None = Field(None, description="Company code every supplier invoice is posted in.")
    default_expense_account: AccountId | None = Field(None, description="G/L account for lines without one.")
    default_tax_code: str | None = Field(None, description="Tax code for lines without one when the bill has tax.")
    discount_gl_account: AccountId | None = Field(None, description="G/L account of a document discount.")
    gl_accounts: dict[str, AccountId] | None = Field(None, description="Source GL account id → SAP G/L account.")
    tax_codes: dict[str, str] | None = Field(None, description="Source tax code → SAP tax code.")
    tax_calculation: str | None = Field(None, description="How SAP treats tax: calculated by SAP or as sent.")
    line_assignments: dict[str, str] | None = Field(
        None, description="Canonical line field → SAP account-assignment property (cost center, WBS element…)."
    )
    chart_of_accounts: str | None = Field(
        None, description="Chart of accounts whose G/L accounts the reference reader reads (default YCOA)."
    )
    language: str | None = Field(None, description="Language of the names the reference reader reads (default EN).")


class Credentials(OAuthCredentials):
    """SAP credentials: a communication user (HTTP Basic) or OAuth 2.0 client credentials."""

    username: SecretStr | None = Field(None, description="Communication user.")
    password: SecretStr | None = Field(None, description="Communication user's password.")
