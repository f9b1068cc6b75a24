"""Canonical ``budget`` and ``budget_change``: project or GL budgets by cost code / account.

Topics ``ledgerflow.budget.v1`` and ``ledgerflow.budget_change.v1``. Mirrors QuickBooks
``Budget`` (``BudgetDetail`` by account). Source: INGENIOUS.BUILD Budget and Budget Change.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ledgerflow.contracts.common import CanonicalRecord, CurrencyCode, Money, Reference, quantize

__all__ = ["Budget", "BudgetChange", "BudgetLine"]


class BudgetLine(BaseModel):
    """One budgeted amount for a cost code and/or GL account (``Decimal``, document currency)."""

    model_config = ConfigDict(extra="forbid")

    line_number: int = Field(ge=1, description="1-based position.")
    source_id: str | None = Field(None, description="Id of the line in the source.")
    description: str | None = Field(None, description="Line description.")
    gl_account: Reference | None = Field(None, description="GL account budgeted.")
    cost_code: Reference | None = Field(None, description="Cost code budgeted.")
    cost_type: Reference | None = Field(None, description="Cost type budgeted.")
    amount: Money = Field(description="Budgeted amount (for a change: the change, may be negative).")
    period_start: date | None = Field(None, description="First day of the period the amount covers.")


class _BudgetBase(CanonicalRecord):
    name: str | None = Field(None, description="Budget or change name/number.")
    project: Reference | None = Field(None, description="Project the budget belongs to.")
    currency: CurrencyCode = Field(description="ISO 4217 currency.")
    start_date: date | None = Field(None, description="Budget start date.")
    end_date: date | None = Field(None, description="Budget end date.")
    lines: list[BudgetLine] = Field(min_length=1, description="Budget lines.")
    total: Money = Field(description="Sum of line amounts.")

    @model_validator(mode="after")
    def _reconciles(self) -> Self:
        lines_sum = quantize(sum((line.amount for line in self.lines), start=self.total * 0), self.currency)
        if lines_sum != quantize(self.total, self.currency):
            raise ValueError(
                f"{self.object_type} {self.canonical_id}: lines add up to {lines_sum} {self.currency}, "
                f"but total is {self.total}"
            )
        return self


class Budget(_BudgetBase):
    """An approved budget."""

    object_type: ClassVar[str] = "budget"


class BudgetChange(_BudgetBase):
    """An approved change to a budget; line amounts are deltas."""

    object_type: ClassVar[str] = "budget_change"

    budget: Reference | None = Field(None, description="The budget being changed.")
