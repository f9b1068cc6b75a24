"""A connection's reference_map overrides references; source ids never become ERP ids by accident."""

from __future__ import annotations

import pytest

from ledgerflow.connectors.references import ReferenceMapError, apply_reference_map, source_reference_ids
from ledgerflow.contracts import Bill, erp_identifiers
from tests.connectors.contract import INGENIOUS_CUSTOM_IDS, INGENIOUS_INTERNAL_IDS, ingenious_bill


@pytest.mark.parametrize("case", ["custom_id", "internal_id_only", "neither"])
def test_ingenious_references_carry_no_internal_id_as_an_erp_id(case: str) -> None:
    bill = ingenious_bill(case)
    refs = [bill.vendor, bill.project] + [r for line in bill.line_items for r in (line.gl_account, line.cost_code)]
    for ref in refs:
        if ref is None:  # no GL account: INGENIOUS sent no accounting_entity_* (case "neither")
            assert case == "neither"
            continue
        erp_id, erp_code, _ = erp_identifiers(ref)
        assert erp_id is None  # INGENIOUS never knows the ERP's internal id
        assert erp_code in ((*INGENIOUS_CUSTOM_IDS.values(),) if case == "custom_id" else (None,))
        if case != "neither":
            assert ref.source_accounting_id in INGENIOUS_INTERNAL_IDS.values()
    assert set(INGENIOUS_INTERNAL_IDS.values()) & source_reference_ids(bill) == (
        set(INGENIOUS_INTERNAL_IDS.values()) if case != "neither" else set()
    )


def test_reference_map_turns_source_keys_into_erp_ids_per_kind() -> None:
    bill = ingenious_bill("internal_id_only")
    options = {
        "reference_map": {
            "vendor": {INGENIOUS_INTERNAL_IDS["company"]: "56"},
            "gl_account": {INGENIOUS_INTERNAL_IDS["entity"]: "600394"},
            "cost_code": {"ing-cc-1": "5000000000000123"},  # keyed by the INGENIOUS cost_code_id
            "project": {INGENIOUS_INTERNAL_IDS["project"]: "JOB-17"},
        }
    }
    mapped = apply_reference_map(bill, options)
    assert isinstance(mapped, Bill)
    assert erp_identifiers(mapped.vendor)[0] == "56"
    assert mapped.vendor.name == "Acme Concrete Supply"  # the rest of the reference is kept
    assert mapped.project is not None
    assert mapped.project.accounting_id == "JOB-17"
    for line in mapped.line_items:
        assert line.gl_account is not None
        assert line.gl_account.accounting_id == "600394"
        assert line.cost_code is not None
        assert line.cost_code.accounting_id == "5000000000000123"
        assert line.project is not None
        assert line.project.accounting_id == "JOB-17"
    assert bill.vendor.accounting_id is None  # the input record is not modified


def test_reference_map_wins_over_the_erp_code_the_source_sent() -> None:
    bill = ingenious_bill("custom_id")
    mapped = apply_reference_map(bill, {"reference_map": {"gl_account": {INGENIOUS_CUSTOM_IDS["entity"]: "84"}}})
    gl = mapped.line_items[0].gl_account
    assert gl is not None
    assert (gl.accounting_id, gl.accounting_custom_id) == ("84", None)


def test_without_a_table_the_record_is_returned_unchanged() -> None:
    bill = ingenious_bill("custom_id")
    assert apply_reference_map(bill, {}) is bill
    assert apply_reference_map(bill, {"reference_map": {"gl_account": {"unrelated": "1"}}}) == bill


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (["gl_account"], "must be a mapping"),
        ({"ledger": {"a": "1"}}, "unknown reference kind"),
        ({"gl_account": ["a"]}, "must map source keys"),
    ],
)
def test_a_malformed_table_is_refused_with_the_reason(table: object, message: str) -> None:
    with pytest.raises(ReferenceMapError, match=message):
        apply_reference_map(ingenious_bill("neither"), {"reference_map": table})
