"""Typed connection settings: every ERP's ``config.py`` forbids unknown keys and names them."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from ledgerflow.connectors.base import PermanentError
from ledgerflow.connectors.config import ConnectionOptions, validate_connection
from ledgerflow.connectors.registry import ERPS, check_routing, connector_class
from ledgerflow.contracts import ErrorCode
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Routing

REPO = Path(__file__).resolve().parents[2]


def _routing(erp: str, options: dict[str, object]) -> Routing:
    return Routing.model_validate(
        {"tenants": {"t": {"connections": ["c"]}}, "connections": {"c": {"erp": erp, "options": options}}}
    )


@pytest.mark.parametrize("erp", list(ERPS))
def test_every_erp_has_typed_options_and_credentials(erp: str) -> None:
    module = importlib.import_module(ERPS[erp].config_module)
    assert issubclass(module.Options, ConnectionOptions)
    for model in (module.Options, module.Credentials):
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description, f"{erp} {model.__name__}.{name} has no description"
    cls = connector_class(erp)
    assert (cls.options_model, cls.credentials_model) == (module.Options, module.Credentials)


@pytest.mark.parametrize("erp", list(ERPS))
def test_a_typo_in_an_option_is_an_error_naming_the_key(erp: str) -> None:
    with pytest.raises(ConfigError, match=r"connection 'c': options\.rate_limit_per_minut: Extra inputs"):
        check_routing(_routing(erp, {"rate_limit_per_minut": 10}))
    check_routing(_routing(erp, {"rate_limit_per_minute": 10}))


def test_wrong_types_and_unknown_credentials_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"options\.book_unapproved"):
        check_routing(_routing("xero", {"book_unapproved": "perhaps"}))
    routing = Routing.model_validate(
        {
            "tenants": {"t": {"connections": ["c"]}},
            "connections": {"c": {"erp": "quickbooks", "credentials": {"realmid": "1"}}},
        }
    )
    with pytest.raises(ConfigError, match=r"credentials\.realmid: Extra inputs"):
        check_routing(routing)


@pytest.mark.parametrize(
    ("erp", "old", "new"),
    [("sap", "default_gl_account", "default_expense_account"), ("netsuite", "default_item_id", "default_item")],
)
def test_the_old_option_names_are_refused_with_the_new_one(erp: str, old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=f"option {old} is now {new}"):
        check_routing(_routing(erp, {old: "61"}))
    check_routing(_routing(erp, {new: "61"}))


def test_a_connector_refuses_invalid_settings_when_built() -> None:
    config = ConnectionConfig(erp="http", base_url="http://127.0.0.1:1", options={"pathz": {}})
    module = importlib.import_module(ERPS["http"].config_module)
    with pytest.raises(PermanentError) as err:
        validate_connection("c", config, module.Options, module.Credentials)
    assert err.value.code is ErrorCode.CONFIG_INVALID
    assert "options.pathz" in err.value.message


def test_an_unknown_erp_kind_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown ERP kind in connection.*c: 'sage'.*known: quickbooks, xero"):
        check_routing(_routing("sage", {}))


def test_the_deployed_routing_file_is_valid() -> None:
    raw = yaml.safe_load((REPO / "deploy" / "base" / "app" / "config" / "routing.yaml").read_text(encoding="utf-8"))
    check_routing(Routing.model_validate(raw))
