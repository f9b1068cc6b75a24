"""Canonical ``vendor`` and ``customer``: master data for the parties on bills and invoices.

Topics ``ledgerflow.vendor.v1`` and ``ledgerflow.customer.v1``. Mirrors QuickBooks ``Vendor``/
``Customer``, Xero ``Contact`` (``IsSupplier``/``IsCustomer``), NetSuite ``vendor``/``customer``,
SAP business partner, Coupa ``supplier``. Sources: Mercoa entity/counterparty, Monite
``counterpart``, AccountingSuite Companies (Customer/Vendor flags).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ledgerflow.contracts.common import Address, CanonicalRecord, CurrencyCode

__all__ = ["BankAccount", "Customer", "Party", "Vendor"]


class BankAccount(BaseModel):
    """Bank details of a party, *masked*: only the last four digits of any number are kept."""

    model_config = ConfigDict(extra="forbid")

    source_id: str | None = Field(None, description="Id of the payment method in the source.")
    account_name: str | None = Field(None, description="Name on the account.")
    bank_name: str | None = Field(None, description="Name of the bank.")
    account_number_last4: str | None = Field(
        None, pattern=r"^[0-9A-Za-z]{0,4}$", description="Last four characters of the account number."
    )
    routing_number_last4: str | None = Field(
        None, pattern=r"^[0-9A-Za-z]{0,4}$", description="Last four characters of the routing/sort code."
    )
    account_type: str | None = Field(None, description="CHECKING, SAVINGS, …, as the source names it.")
    currency: CurrencyCode | None = Field(None, description="Currency the account holds.")
    is_default: bool = Field(False, description="Whether it is the party's default payout account.")


class Party(CanonicalRecord):
    """Fields shared by vendors and customers."""

    name: str = Field(min_length=1, description="Display name (QuickBooks `DisplayName`, Xero `Name`).")
    legal_name: str | None = Field(None, description="Registered legal name.")
    email: str | None = Field(None, description="Main e-mail address.")
    phone: str | None = Field(None, description="Main phone number.")
    tax_id: str | None = Field(None, description="Tax id: EIN, VAT or GST number.")
    address: Address | None = Field(None, description="Billing or registered address.")
    currency: CurrencyCode | None = Field(None, description="Default currency for the party.")
    active: bool = Field(True, description="False when the source hid, archived or deleted the party.")
    bank_accounts: list[BankAccount] = Field(default_factory=list, description="Masked bank accounts.")


class Vendor(Party):
    """A supplier the company buys from (AP side)."""

    object_type: ClassVar[str] = "vendor"


class Customer(Party):
    """A customer the company sells to (AR side)."""

    object_type: ClassVar[str] = "customer"
