"""Building blocks every canonical contract shares: money, currency, references, addresses.

Money is always :class:`decimal.Decimal` and serialises to a JSON *string* (``"100.00"``), never a
float, so no amount loses precision on its way through Kafka. Every reference to another
accounting object keeps the ids the source system uses (``source_id``, ``source_accounting_id``)
apart from the ERP identifiers the source knows (``accounting_id``, ``accounting_custom_id``), so
a connector resolves it in the ERP without guessing and never sends a source id to an ERP.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

from babel.numbers import get_currency_precision, list_currencies
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

__all__ = [
    "Action",
    "Address",
    "CanonicalRecord",
    "ContractError",
    "CurrencyCode",
    "Money",
    "Quantity",
    "Rate",
    "Reference",
    "Source",
    "canonical_id",
    "currency_precision",
    "erp_identifiers",
    "is_legacy_key",
    "quantize",
    "tenant_scoped",
]


class ContractError(ValueError):
    """A record cannot be expressed as a valid canonical contract (the reason is the message)."""


def _no_float(value: Any) -> Any:
    """Turn ints and floats into Decimal through ``str`` so ``0.1`` stays ``0.1`` exactly."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, float | int):
        return Decimal(str(value))
    return value


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    return value


_decimal_str = PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")

Money = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    AfterValidator(_finite),
    _decimal_str,
    Field(json_schema_extra={"format": "decimal"}),
]
"""A monetary amount in the major unit of its currency (``Decimal``; JSON: decimal string)."""

Quantity = Money
"""A quantity of units (``Decimal``; JSON: decimal string)."""

Rate = Money
"""A rate such as a tax rate in percent (``Decimal``; JSON: decimal string)."""


@lru_cache(maxsize=1)
def _iso_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def _currency(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("currency must be an ISO 4217 code string")
    code = value.strip().upper()
    if code not in _iso_currencies():
        raise ValueError(f"unknown ISO 4217 currency code {value!r}")
    return code


CurrencyCode = Annotated[
    str,
    BeforeValidator(_currency),
    Field(min_length=3, max_length=3, description="ISO 4217 alphabetic currency code, upper case."),
]
"""An ISO 4217 alphabetic currency code (normalised to upper case, validated against CLDR)."""


def currency_precision(currency: str) -> int:
    """Return the number of minor-unit digits of ``currency`` (USD → 2, JPY → 0, KWD → 3).

    Source: the CLDR currency data shipped with Babel.
    """
    return int(get_currency_precision(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to the minor unit of ``currency`` with banker's rounding.

    Raises:
        ContractError: when the amount has more digits than ``Decimal`` arithmetic can hold (28).
    """
    try:
        return amount.quantize(Decimal(1).scaleb(-currency_precision(currency)), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        raise ContractError(f"amount {amount} {currency} is out of range") from None


class Source(StrEnum):
    """Systems ledgerflow receives records from."""

    INGENIOUS = "ingenious"
    MERCOA = "mercoa"
    MONITE = "monite"
    ACCOUNTINGSUITE = "accountingsuite"
    ACCESSPLANIT = "accessplanit"
    STANDARD_WEBHOOKS = "standardwebhooks"
    CUSTOM = "custom"
    """Any plain signed or tokened webhook sender, mapped by the tenant's mapping file."""


class Action(StrEnum):
    """What the source asks the ERP to do with the record.

    ``upsert`` creates the record or updates the copy already booked; ``void`` cancels a booked
    transaction (Mercoa ``invoice.deleted``/``CANCELED``); ``delete`` removes master data.
    """

    UPSERT = "upsert"
    VOID = "void"
    DELETE = "delete"


_SOURCE_VALUES = frozenset(s.value for s in Source)


def canonical_id(tenant: str, source: str, object_type: str, source_id: str) -> str:
    """Build the canonical id ``<tenant>:<source>:<object>:<source id>``: Kafka key, binder key, audit key.

    The tenant is part of every identity: two tenants whose sources use the same record id get
    two canonical ids, so two binder rows, two idempotency keys and two ERP documents.

    Raises:
        ContractError: the tenant or the source id is empty.
    """
    if not tenant:
        raise ContractError(f"{source} {object_type} has no tenant")
    if not source_id:
        raise ContractError(f"{source} {object_type} has no source id")
    return f"{tenant}:{source}:{object_type}:{source_id}"


_OBJECT_TYPES = frozenset(
    {
        "bill",
        "vendor",
        "customer",
        "invoice",
        "payment",
        "purchase_order",
        "purchase_order_change",
        "budget",
        "budget_change",
        "item",
        "sales_order",
    }
)
"""Canonical object types (``contracts.OBJECT_MODELS`` keys; a test keeps the two equal)."""


def is_legacy_key(key: str) -> bool:
    """Whether ``key`` was written before identities carried the tenant.

    Legacy keys are canonical ids ``<source>:<object>:<source id>`` (a known source, then a known
    object type) and reference keys ``<kind>-ref:<source id>``. Current keys start with the tenant:
    ``<tenant>:<source>:<object>:<source id>`` and ``<tenant>:<kind>-ref:<source id>``.
    """
    parts = key.split(":", 2)
    if len(parts) >= 2 and parts[0].endswith("-ref"):
        return True
    return len(parts) == 3 and parts[0] in _SOURCE_VALUES and parts[1] in _OBJECT_TYPES


def tenant_scoped(tenant: str, key: str) -> str:
    """``key`` (a canonical id or a binder key) with ``tenant`` in front when it is a legacy key.

    ``mercoa:bill:in_1`` → ``<tenant>:mercoa:bill:in_1`` and ``vendor-ref:v1`` →
    ``<tenant>:vendor-ref:v1`` (:func:`is_legacy_key`); any other key is returned unchanged. Used
    by the state-store and audit migrations and by every stage reading a record published before
    the change (still in a topic at the upgrade), so old and new keys of one record meet.
    """
    return f"{tenant}:{key}" if is_legacy_key(key) else key


class Reference(BaseModel):
    """A pointer to another accounting object (vendor, GL account, cost code, project, tax rate…).

    Two kinds of id live here and are never confused:

    * **Source ids** — ``source_id`` (the object's id in the source, e.g. an INGENIOUS
      ``vendor_id``) and ``source_accounting_id`` (the source's *own* id of the accounting
      mapping record it keeps for the ERP object, e.g. INGENIOUS ``accounting_company_id``,
      Monite ``ledger_account_id``). Connectors never send either to an ERP; enrichment uses
      ``source_accounting_id`` to fetch the ERP identifier from the source's API.
    * **ERP identifiers** — ``accounting_id`` (the ERP's internal id: QuickBooks ``Id``, Xero
      ``ContactID``, NetSuite internal id) and ``accounting_custom_id`` (the ERP identifier a user
      typed into the source: an account number, supplier number, cost code — INGENIOUS
      ``*_custom_id``, seed 000 l.68–69 and l.98–101, Monite ledger account ``nominal_code``).

    Resolution order in connectors (:func:`erp_identifiers`): ``accounting_id``, then
    ``accounting_custom_id`` looked up as the ERP's number/code, then the binder entry for
    ``source_id``, then ``name``, then the connection's default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_id: str | None = Field(None, description="Id of the object in the source system (never sent to an ERP).")
    source_accounting_id: str | None = Field(
        None,
        description=(
            "The source's own id of its accounting-mapping record (INGENIOUS `accounting_*_id`, Monite "
            "`ledger_account_id`); never an ERP id, never sent to an ERP."
        ),
    )
    accounting_id: str | None = Field(
        None, description="The object's internal id in the ERP, when the source knows it."
    )
    accounting_custom_id: str | None = Field(
        None,
        description=(
            "The object's identifier in the ERP as a user keyed it into the source: GL account number, "
            "supplier number, cost code (INGENIOUS `*_custom_id`, Monite `nominal_code`)."
        ),
    )
    name: str | None = Field(None, description="Display name, used for matching when no ERP identifier is known.")

    @property
    def resolved(self) -> bool:
        """Whether an ERP identifier is known (otherwise the connector matches by name or uses a default)."""
        return bool(self.accounting_id or self.accounting_custom_id)


def erp_identifiers(ref: Reference | None) -> tuple[str | None, str | None, str | None]:
    """The ERP-side identifiers of ``ref``: ``(erp id, erp number/code, name)``.

    The only values a connector may send to an ERP or look up in it. Source ids
    (``source_id``, ``source_accounting_id``) are never returned; a missing reference gives
    ``(None, None, None)``.
    """
    if ref is None:
        return None, None, None
    return ref.accounting_id or None, ref.accounting_custom_id or None, ref.name or None


class Address(BaseModel):
    """A postal address as the source sent it."""

    model_config = ConfigDict(extra="forbid")

    line1: str | None = Field(None, description="First address line.")
    line2: str | None = Field(None, description="Second address line.")
    city: str | None = Field(None, description="City or locality.")
    region: str | None = Field(None, description="State, province or region.")
    postal_code: str | None = Field(None, description="Postal or ZIP code.")
    country: str | None = Field(None, description="ISO 3166-1 alpha-2 country code where known.")


class CanonicalRecord(BaseModel):
    """Fields every canonical record carries, whatever its object type.

    The Kafka value of ``ledgerflow.<object>.v1`` is the JSON of a subclass; the key is
    :attr:`canonical_id`.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    object_type: ClassVar[str] = "record"

    canonical_id: str = Field(
        description="`<tenant>:<source>:<object>:<source id>`; Kafka key, binder key and audit key."
    )
    tenant: str = Field(description="ledgerflow tenant the record belongs to.")
    source: Source = Field(description="System the record came from.")
    source_id: str = Field(description="Id of the record in the source system.")
    source_event: str = Field(description="Source event type that produced this version, e.g. `invoice.created`.")
    action: Action = Field(Action.UPSERT, description="What the ERP should do with the record.")
    source_updated_at: datetime | None = Field(
        None, description="When the source last changed the record (orders versions of one record)."
    )
    accounting_id: str | None = Field(
        None, description="The record's id in the accounting system, when the source already knows it."
    )
    custom_fields: dict[str, str] = Field(
        default_factory=dict, description="Source custom fields / metadata, as strings."
    )


StatusLiteral = Literal["draft", "submitted", "approved", "scheduled", "paid", "partially_paid", "void"]
