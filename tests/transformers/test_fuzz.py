"""Fuzz every mapper with mutated real payloads: no input makes a mapper fail with anything but a typed error.

Each golden input (``tests/golden/<source>/<object>.input.json``, the Mercoa one from
``../shared/samples``) is mutated one to three times (:mod:`tests.transformers.mutations`: wrong
JSON types, deleted members, values wrapped in arrays, huge, non-finite and non-ASCII numbers) and
run through its source's router and mapper. Allowed outcomes: records, ``SkipEvent``,
``ContractError`` or ``pydantic.ValidationError`` (both become an ``invalid-record`` dead letter).
The mapper is called *without* the :func:`~ledgerflow.transformers.base.shape_checked` safety net,
and the net's :class:`~ledgerflow.transformers.base.UnexpectedShapeError` counts as a failure too: the
mappers' own validation must name what is wrong. Derandomized and bounded (50 examples per input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings

from ledgerflow.contracts import ContractError
from ledgerflow.transformers.base import SkipEvent, UnexpectedShapeError
from ledgerflow.transformers.registry import ROUTERS
from tests.transformers.mutations import GOLDEN, golden_specs, mutated
from tests.transformers.transformer_helpers import raw_event

CASES = sorted(f"{p.parent.name}/{p.name.removesuffix('.input.json')}" for p in GOLDEN.glob("*/*.input.json"))
FUZZ = settings(
    max_examples=50, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def _spec(case: str, shared_dir: Path) -> tuple[str, dict[str, Any]]:
    index = CASES.index(case)
    return golden_specs(shared_dir)[index]


def _map_unguarded(source: str, spec: dict[str, Any]) -> None:
    event = raw_event(
        source,
        spec["event_type"],
        spec["payload"],
        tenant=spec.get("tenant", "acme"),
        object_hint=spec.get("object_hint"),
        method=spec.get("method", "POST"),
        enrichment=spec.get("enrichment"),
    )
    try:
        route = ROUTERS[source](event)
        getattr(route.mapper, "__wrapped__", route.mapper)(event)
    except UnexpectedShapeError:
        raise
    except (ContractError, pydantic.ValidationError, SkipEvent):
        pass


@pytest.mark.parametrize("case", CASES)
def test_mutated_payloads_fail_only_with_typed_errors(case: str, shared_dir: Path) -> None:
    source, spec = _spec(case, shared_dir)

    @FUZZ
    @given(mutated(spec))
    def run(candidate: dict[str, Any]) -> None:
        _map_unguarded(source, candidate)

    run()


def test_the_safety_net_names_the_exception_and_where() -> None:
    from ledgerflow.transformers.base import Route

    def broken(event: Any) -> Any:
        return event.payload["lines"][0].items()

    route = Route("bill", broken)
    with pytest.raises(UnexpectedShapeError, match=r"AttributeError: 'int' object has no attribute 'items' in broken"):
        route.mapper(raw_event("mercoa", "invoice.created", {"lines": [1]}))
