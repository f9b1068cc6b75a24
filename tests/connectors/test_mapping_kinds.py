"""Issue 19: every ERP's table of the mapping kinds its connector honours (``Connector.mapping_kinds``).

A mapping of a kind the connector never reads is stored and does nothing; the table beside each
connector says which kinds are read, and what the connector uses instead of the others. These
tests walk every ERP of the registry and hold the table to the connector's own source.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from ledgerflow.connectors.references import REFERENCE_KINDS
from ledgerflow.connectors.registry import ERPS, connector_class, mapping_kind_use, reference_map_problems
from ledgerflow.core.settings import ConnectionConfig


def _sources(erp: str) -> str:
    """The connector's and its mapping module's source (what reads a record's references)."""
    folder = Path(inspect.getfile(connector_class(erp))).parent
    return "\n".join((folder / name).read_text(encoding="utf-8") for name in ("connector.py", "mapping.py"))


@pytest.mark.parametrize("erp", list(ERPS))
def test_every_kind_is_either_honoured_or_explained(erp: str) -> None:
    cls = connector_class(erp)
    assert cls.mapping_kinds, f"{erp}: no mapping_kinds"
    # An explicit table: each reference kind is honoured, or says what the connection uses instead.
    assert not cls.mapping_kinds & set(cls.unused_mapping_kinds), f"{erp}: a kind both honoured and unused"
    assert cls.mapping_kinds | set(cls.unused_mapping_kinds) == set(REFERENCE_KINDS), erp
    use = mapping_kind_use(erp, {})
    assert use is not None
    for kind in REFERENCE_KINDS:
        why = use.refusal(kind)
        assert (why is None) == (kind in cls.honoured_mapping_kinds({})), (erp, kind)
        if why is not None and kind in cls.unused_mapping_kinds:
            assert cls.unused_mapping_kinds[kind] in why


@pytest.mark.parametrize("erp", [erp for erp in ERPS if erp != "http"])  # http sends the whole record
def test_the_table_agrees_with_what_the_connector_reads(erp: str) -> None:
    cls = connector_class(erp)
    source = _sources(erp)
    fixed = cls.mapping_kinds
    for kind in fixed:
        assert re.search(rf"\.{kind}\b|\"{kind}\"", source), f"{erp}: {kind} is in mapping_kinds but never read"
    for kind in set(REFERENCE_KINDS) - cls.honoured_mapping_kinds({}):
        assert not re.search(rf"(line|bill|invoice|order|payment|record|document|change)\.{kind}\b", source), (
            f"{erp}: the connector reads {kind} but its mapping_kinds does not list it"
        )


def test_quickbooks_tax_rate_mappings_are_refused_naming_its_tax_options() -> None:
    use = mapping_kind_use("quickbooks", {})
    assert use is not None
    why = use.refusal("tax_rate")
    assert why is not None
    assert why.startswith("quickbooks books tax through the connection's options (options.tax_code")
    assert why.endswith(
        "tax_rate mappings are not used (mapping kinds quickbooks uses: ap_account, bank_account, "
        "business_unit, cost_code, customer, gl_account, item, party, project, vendor)"
    )
    assert use.refusal("cost_code") is None
    xero = mapping_kind_use("xero", {})
    assert xero is not None
    assert xero.refusal("cost_code") is None
    assert xero.refusal("tax_rate") is None
    assert xero.refusal("ap_account") is not None


def test_options_that_choose_line_fields_change_what_is_honoured() -> None:
    netsuite = mapping_kind_use("netsuite", {"line_segments": {"cost_type": "class"}})
    assert netsuite is not None
    assert netsuite.refusal("cost_type") is None
    assert netsuite.refusal("cost_code") is not None  # no longer a segment
    sap = mapping_kind_use("sap", {"line_assignments": {"business_unit": "CostCenter"}})
    assert sap is not None
    assert sap.refusal("project") is not None
    coupa = mapping_kind_use("coupa", {})
    assert coupa is not None
    assert coupa.refusal("gl_account") is None
    assert coupa.refusal("business_unit") is not None


def test_config_check_refuses_a_yaml_reference_map_of_an_unused_kind() -> None:
    config = ConnectionConfig(
        erp="quickbooks",
        objects=["bill"],
        options={"reference_map": {"tax_rate": {"vat20": "7"}, "gl_account": {"m": "84"}, "colour": {"r": "1"}}},
    )
    problems = reference_map_problems("qbo-main", config)
    assert len(problems) == 2
    assert problems[0].startswith("connection qbo-main: options.reference_map.tax_rate: quickbooks books tax")
    assert "options.reference_map.colour: unknown reference kind" in problems[1]
    fine = ConnectionConfig(erp="xero", objects=["bill"], options={"reference_map": {"tax_rate": {"v": "INPUT"}}})
    assert reference_map_problems("xero-main", fine) == []


def test_ledgerflow_config_check_reports_an_unused_yaml_mapping_kind(tmp_path: Path) -> None:
    from ledgerflow.app.config_check import check_config
    from ledgerflow.core.settings import Settings

    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "tenants: {acme: {sources: {}, connections: [q]}}\n"
        "connections:\n"
        "  q: {erp: quickbooks, options: {reference_map: {tax_rate: {vat20: '7'}}}}\n"
    )
    report = check_config(Settings(routing_file=routing))
    assert not report.ok
    assert any(
        p.startswith("connection q: options.reference_map.tax_rate: quickbooks books tax") for p in report.problems
    )
    routing.write_text(routing.read_text().replace("tax_rate", "cost_code"))
    assert check_config(Settings(routing_file=routing)).ok
