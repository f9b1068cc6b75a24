"""INGENIOUS fields seed 000 does not document (``date``, ``currency``) default from the tenant's
settings, say so in ``custom_fields``, and without a setting the record is refused naming it."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from ledgerflow.contracts import ContractError, PurchaseOrder
from ledgerflow.core.settings import Routing
from ledgerflow.transformers.ingenious import route
from tests.transformers.transformer_helpers import raw_event

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "ingenious"


def _contract_without_date_and_currency() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((GOLDEN / "vendor_contract.input.json").read_text(encoding="utf-8"))["payload"]
    del payload["data"]["date"]
    del payload["data"]["currency"]
    return payload


def _map(defaults: dict[str, str], accepted: datetime) -> PurchaseOrder:
    event = raw_event(
        "ingenious",
        "vendor_contract.sync",
        _contract_without_date_and_currency(),
        object_hint="vendor_contract",
        enrichment={"defaults": defaults},
    )
    event = dataclasses.replace(event, attributes=dataclasses.replace(event.attributes, time=accepted))
    (record,) = route(event).mapper(event)
    assert isinstance(record, PurchaseOrder)
    return record


def test_a_contract_without_date_and_currency_takes_the_tenants_defaults_and_says_so() -> None:
    # 03:30 UTC on 16 March is still 15 March in New York: the date is the tenant's calendar day.
    accepted = datetime(2024, 3, 16, 3, 30, tzinfo=UTC)
    po = _map({"currency": "USD", "date_default": "received", "timezone": "America/New_York"}, accepted)
    assert po.order_date == date(2024, 3, 15)
    assert po.currency == "USD"
    assert po.custom_fields["date_source"] == "received 2024-03-15 America/New_York (no data.date; tenant date_default)"
    assert po.custom_fields["currency_source"] == "tenant default (no data.currency)"
    assert str(po.total) == "127000.00"


def test_without_the_settings_the_record_is_refused_naming_them() -> None:
    accepted = datetime(2024, 3, 16, 3, 30, tzinfo=UTC)
    with pytest.raises(ContractError, match=r"no data\.date and the tenant sets no ingenious options\.date_default"):
        _map({"currency": "USD"}, accepted)
    with pytest.raises(ContractError, match="'Mars/Olympus' is not an IANA time zone"):
        _map({"currency": "USD", "date_default": "received", "timezone": "Mars/Olympus"}, accepted)
    with pytest.raises(ContractError, match=r"no data\.currency and the tenant sets no ingenious options\.currency"):
        _map({"date_default": "received"}, accepted)


def test_the_routing_options_reach_the_mapper_as_defaults() -> None:
    from ledgerflow.transformers.enrichment import EnricherSet

    routing = Routing.model_validate(
        {
            "tenants": {
                "acme": {
                    "sources": {
                        "ingenious": {
                            "tokens": ["t"],
                            "options": {"currency": "usd", "date_default": "received", "timezone": "Europe/Berlin"},
                        }
                    }
                }
            }
        }
    )
    enrichers = EnricherSet(routing, None, None)  # type: ignore[arg-type]
    defaults = enrichers.get("defaults").for_tenant("acme")["ingenious"]
    assert defaults == {"currency": "USD", "date_default": "received", "timezone": "Europe/Berlin"}


def test_custom_ids_reach_the_mapper_only_when_set_or_implied_by_writeback() -> None:
    from ledgerflow.core.settings import ConfigError
    from ledgerflow.transformers.enrichment import EnricherSet

    def custom_ids(tenant: dict[str, Any]) -> object:
        routing = Routing.model_validate({"tenants": {"acme": tenant}})
        enrichers = EnricherSet(routing, None, None)  # type: ignore[arg-type]
        return enrichers.get("defaults").for_tenant("acme").get("ingenious", {}).get("custom_ids")

    source = {"tokens": ["t"], "options": {"currency": "usd"}}
    writeback: dict[str, Any] = {"ingenious": {}}
    assert custom_ids({"sources": {"ingenious": source}}) is None  # absent: number, the mapper's default
    assert custom_ids({"sources": {"ingenious": source}, "writeback": writeback}) == "erp_id"
    explicit = {"tokens": ["t"], "options": {"custom_ids": "number"}}
    assert custom_ids({"sources": {"ingenious": explicit}, "writeback": writeback}) == "number"
    wrong = {"tokens": ["t"], "options": {"custom_ids": "code"}}
    with pytest.raises(ConfigError, match="custom_ids must be erp_id or number, not 'code'"):
        custom_ids({"sources": {"ingenious": wrong}})
