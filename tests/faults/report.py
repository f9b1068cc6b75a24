"""The fault suite's report: per scenario, accepted / booked / dead-lettered / lost / duplicated.

Each scenario calls :func:`record_scenario` with its counts (and asserts them itself); the suite's
``pytest_terminal_summary`` (``tests/faults/conftest.py``) prints every scenario of the run as one
table, and each scenario prints its own line at once (visible with ``pytest -s``).

* accepted — webhooks the ingress answered 2xx;
* booked — distinct ERP documents created for them (counted in the ERP sandboxes);
* dead-lettered — poison records that reached a dead-letter topic with their reason;
* lost — accepted good records with no ERP document;
* duplicated — ERP documents beyond one per accepted record.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCENARIOS", "ScenarioReport", "record_scenario", "table"]


@dataclass(frozen=True)
class ScenarioReport:
    """The counts of one fault scenario."""

    scenario: str
    accepted: int
    booked: int
    dead_lettered: int
    lost: int
    duplicated: int
    note: str = ""

    def line(self) -> str:
        """One table row."""
        return (
            f"{self.scenario:<52} {self.accepted:>8} {self.booked:>7} {self.dead_lettered:>13} "
            f"{self.lost:>5} {self.duplicated:>10}  {self.note}"
        )


SCENARIOS: list[ScenarioReport] = []
"""Every scenario reported in this run, in order."""

HEADER = f"{'scenario':<52} {'accepted':>8} {'booked':>7} {'dead-lettered':>13} {'lost':>5} {'duplicated':>10}"


def record_scenario(report: ScenarioReport) -> ScenarioReport:
    """Keep ``report`` for the terminal summary and print its line now."""
    SCENARIOS.append(report)
    print(f"\n{HEADER}\n{report.line()}")
    return report


def table() -> str:
    """Every reported scenario as a text table (empty when none ran)."""
    if not SCENARIOS:
        return ""
    return "\n".join([HEADER, *(r.line() for r in SCENARIOS)])
