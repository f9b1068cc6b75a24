"""Mercoa ``entity.*``, ``counterparty.*`` and ``paymentMethod.*`` → canonical vendor / customer.

Follows Mercoa's ``EntityResponse`` and ``PaymentMethodResponse`` as in the SDK webhook
fixtures (``mercoa-finance/csharp`` ``EntityWebhookTest.cs``, ``PaymentMethodWebhookTest.cs``,
``CounterpartyWebhookTest.cs``; envelopes in ``shared/reference/sources.md`` §2.1):

=======================================================  ===========================================
Mercoa                                                   canonical Vendor / Customer
=======================================================  ===========================================
``entity.id``                                            ``source_id`` (``ent_…``)
``entity.isPayee`` / ``isPayor`` / ``isCustomer``        vendor if payee; customer if payor and not
                                                         the platform's own customer (skipped)
``entity.name``                                          ``name``
``profile.business.legalBusinessName`` (or
``profile.individual.name.firstName/lastName``)          ``legal_name`` (``name`` when none)
``entity.email`` / ``profile.*.email``                   ``email``
``profile.*.phone.{countryCode,number}``                 ``phone`` (``+<code> <number>``)
``profile.business.taxId.ein.number``                    ``tax_id``
``profile.*.address``                                    ``address``
``entity.foreignId``                                     ``custom_fields["foreign_id"]``
``entity.updatedAt``                                     ``source_updated_at``
``paymentMethods[]`` / ``paymentMethod`` (bankAccount)   ``bank_accounts`` — **masked**: only the last
                                                         four characters of ``accountNumber`` and
                                                         ``routingNumber`` are kept
``counterparty.hidden`` / ``entity.deleted``             ``active = false``
=======================================================  ===========================================

``counterparty.*`` webhooks carry only ids (``payeeId[]``, ``payorId[]`` or ``counterpartyId``):
their route's enrichment fetches each entity (``GET /entity/{id}``) into
``enrichment["entities"]``; without a Mercoa API key configured they are skipped with a reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ledgerflow.contracts import (
    Action,
    Address,
    BankAccount,
    CanonicalRecord,
    ContractError,
    Customer,
    Party,
    Source,
    Vendor,
    canonical_id,
)
from ledgerflow.transformers.base import (
    Enrichers,
    RawEvent,
    SkipEvent,
    as_datetime,
    as_object,
    as_objects,
    require,
)

__all__ = [
    "enrich_counterparty",
    "entity_records",
    "map_counterparty",
    "map_entity",
    "map_payment_method",
    "mask_bank_account",
]


def _last4(value: Any) -> str | None:
    text = "".join(ch for ch in str(value or "") if ch.isalnum())
    return text[-4:] or None


def mask_bank_account(method: dict[str, Any]) -> BankAccount | None:
    """A Mercoa ``bankAccount`` payment method as a masked :class:`~contracts.BankAccount` (None for others).

    Only the last four characters of ``accountNumber``/``routingNumber`` survive; the full
    numbers never leave this function.
    """
    if str(method.get("type", "")).lower() != "bankaccount":
        return None
    currencies = method.get("supportedCurrencies") or []
    if not isinstance(currencies, list):
        raise ContractError("paymentMethod.supportedCurrencies must be a JSON array")
    return BankAccount(
        source_id=method.get("id"),
        account_name=method.get("accountName"),
        bank_name=method.get("bankName"),
        account_number_last4=_last4(method.get("accountNumber")),
        routing_number_last4=_last4(method.get("routingNumber")),
        account_type=method.get("accountType"),
        currency=currencies[0] if len(currencies) == 1 else None,
        is_default=bool(method.get("isDefaultDestination")),
    )


def _profile(entity: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    profile = as_object(entity.get("profile"), "entity.profile")
    business = as_object(profile.get("business"), "entity.profile.business")
    if business:
        return business, business.get("legalBusinessName")
    individual = as_object(profile.get("individual"), "entity.profile.individual")
    name = as_object(individual.get("name"), "entity.profile.individual.name")
    full = " ".join(p for p in (name.get("firstName"), name.get("middleName"), name.get("lastName")) if p)
    return individual, full or None


def _address(value: Any) -> Address | None:
    raw = as_object(value, "entity.profile address")
    if not raw:
        return None
    return Address(
        line1=raw.get("addressLine1"),
        line2=raw.get("addressLine2"),
        city=raw.get("city"),
        region=raw.get("stateOrProvince"),
        postal_code=raw.get("postalCode"),
        country=raw.get("country"),
    )


def _kind(entity: dict[str, Any]) -> type[Party]:
    if entity.get("isPayee"):
        return Vendor
    if entity.get("isPayor") and not entity.get("isCustomer"):
        return Customer
    raise SkipEvent("Mercoa entity is the platform's own customer, not a vendor or customer counterparty")


def entity_records(
    event: RawEvent,
    entity: dict[str, Any],
    *,
    active: bool = True,
    bank_accounts: list[BankAccount] | None = None,
    kind: type[Party] | None = None,
) -> list[CanonicalRecord]:
    """One vendor or customer from an ``EntityResponse`` (see the module table).

    Raises:
        SkipEvent: the entity is the platform's own customer.
        contracts.ContractError: no id or no name.

    """
    entity = as_object(entity, "entity")
    model = kind or _kind(entity)
    source_id = str(require(entity, "id"))
    details, legal = _profile(entity)
    name = entity.get("name") or legal
    if not name:
        raise ContractError(f"Mercoa entity {source_id} has no name")
    phone = as_object(details.get("phone"), "entity.profile phone")
    tax_ids = as_object(details.get("taxId"), "entity.profile taxId")
    tax = as_object(tax_ids.get("ein"), "entity.profile taxId.ein").get("number")
    if bank_accounts is None:
        methods = as_objects(entity.get("paymentMethods"), "entity.paymentMethods")
        bank_accounts = [b for m in methods if (b := mask_bank_account(m))]
    custom = {"foreign_id": str(entity["foreignId"])} if entity.get("foreignId") else {}
    return [
        model(
            canonical_id=canonical_id(event.tenant, Source.MERCOA, model.object_type, source_id),
            tenant=event.tenant,
            source=Source.MERCOA,
            source_id=source_id,
            source_event=event.event_type,
            action=Action.UPSERT,
            source_updated_at=as_datetime(entity["updatedAt"], "entity.updatedAt") if entity.get("updatedAt") else None,
            custom_fields=custom,
            name=str(name),
            legal_name=legal,
            email=entity.get("email") or details.get("email"),
            phone=f"+{phone['countryCode']} {phone['number']}"
            if phone.get("number") and phone.get("countryCode")
            else phone.get("number"),
            tax_id=tax,
            address=_address(details.get("address")),
            active=active and str(entity.get("status", "")).lower() != "deleted",
            bank_accounts=bank_accounts,
        )
    ]


def map_entity(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``entity.created`` / ``entity.updated`` / ``entity.status.changed`` → vendor or customer.

    Raises:
        SkipEvent: the entity is the platform's own customer.
        contracts.ContractError: no ``entity`` object, id or name.

    """
    entity = as_object(require(event.payload, "entity"), "entity")
    return entity_records(event, entity, active=event.event_type != "entity.deleted")


def map_payment_method(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``paymentMethod.*`` → the owning vendor (or customer) with its masked bank accounts.

    The event's method replaces the one with the same id among ``entity.paymentMethods``;
    ``paymentMethod.deleted`` removes it. Non-bank methods (card, check) leave the list as is.

    Raises:
        SkipEvent: the owner is the platform's own customer.
        contracts.ContractError: no ``entity`` or ``paymentMethod`` object.

    """
    entity = as_object(require(event.payload, "entity"), "entity")
    method = as_object(require(event.payload, "paymentMethod"), "paymentMethod")
    method_id = method.get("id")
    methods = as_objects(entity.get("paymentMethods"), "entity.paymentMethods")
    accounts = [b for m in methods if m.get("id") != method_id and (b := mask_bank_account(m))]
    if event.event_type != "paymentMethod.deleted" and (masked := mask_bank_account(method)):
        accounts.append(masked)
    return entity_records(event, entity, bank_accounts=accounts)


def _id_list(payload: dict[str, Any], field: str) -> list[Any]:
    ids = payload.get(field) or []
    if not isinstance(ids, list) or any(isinstance(i, dict | list) or i is None for i in ids):
        raise ContractError(f"{field} must be a JSON array of ids")
    return ids


def _counterparty_ids(payload: Any) -> list[tuple[str, type[Party]]]:
    payload = as_object(payload, "Mercoa counterparty webhook body")
    ids: list[tuple[str, type[Party]]] = [(str(i), Vendor) for i in _id_list(payload, "payeeId")]
    ids += [(str(i), Customer) for i in _id_list(payload, "payorId")]
    if payload.get("counterpartyId"):
        ids.append((str(payload["counterpartyId"]), Vendor))
    return ids


async def enrich_counterparty(event: RawEvent, enrichers: Enrichers) -> RawEvent:
    """Fetch every counterparty entity a ``counterparty.*`` webhook names (``GET /entity/{id}``).

    Raises:
        ledgerflow.core.outbound.json_api.EnrichmentError: the Mercoa API call failed after retries.

    """
    client = enrichers.get("mercoa").for_tenant(event.tenant)
    if client is None:
        return event
    entities = {entity_id: await client.entity(entity_id) for entity_id, _ in _counterparty_ids(event.payload)}
    return dataclasses.replace(event, enrichment={**event.enrichment, "entities": entities})


def map_counterparty(event: RawEvent) -> Sequence[CanonicalRecord]:
    """``counterparty.added|hidden|onboarding.completed`` → vendors (payees) and customers (payors).

    Raises:
        SkipEvent: the webhook names no counterparty, or the entities were not fetched (no
            Mercoa API configured for the tenant).
        contracts.ContractError: a fetched entity has no id or name.

    """
    ids = _counterparty_ids(event.payload)
    if not ids:
        raise SkipEvent("Mercoa counterparty event names no counterparty")
    fetched = as_object(event.enrichment.get("entities"), "fetched entities")
    if not fetched:
        raise SkipEvent("Mercoa counterparty event carries only ids; configure options.api_key to fetch them")
    records: list[CanonicalRecord] = []
    for entity_id, kind in ids:
        entity = fetched.get(entity_id)
        if entity is None:
            raise ContractError(f"Mercoa counterparty {entity_id} was not fetched")
        records += entity_records(event, entity, active=event.event_type != "counterparty.hidden", kind=kind)
    return records
