"""Mutated real payloads for fuzzing the mappers: the golden inputs with surprises injected.

A mutation picks one place in the JSON document (any object member or array element, found by
walking the document) and replaces it with a value of another shape, deletes it, or wraps it in
a list. The values are the ones hostile or unlucky senders produce: wrong JSON types, empty
containers, numbers where text is expected and text where numbers are, huge and non-finite
numbers, non-ASCII digits, very long text.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

GOLDEN = Path(__file__).resolve().parent.parent / "golden"

Path_ = tuple[str | int, ...]

SURPRISES: list[Any] = [
    None,
    "",
    "x",
    "²³",
    "1e400",
    "NaN",
    "-0",
    0,
    -1,
    2**63 - 1,
    1.5,
    1e308,
    True,
    [],
    {},
    [None],
    [1, "a"],
    {"unexpected": [1]},
    "2024-13-45",
    "9" * 400,
    "\u0000",
]


def golden_specs(shared_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(source, spec)`` of every golden input, with ``payload_from_shared`` resolved under ``shared_dir``."""
    specs = []
    for path in sorted(GOLDEN.glob("*/*.input.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        if "payload_from_shared" in spec:
            spec["payload"] = json.loads((shared_dir / spec["payload_from_shared"]).read_text(encoding="utf-8"))
        specs.append((path.parent.name, spec))
    return specs


def paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path below ``node`` (object members and array elements), depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from paths(value, (*prefix, index))


def mutate(document: Any, at: Path_, operation: str, value: Any) -> Any:
    """A copy of ``document`` with the node at ``at`` replaced by ``value``, deleted or wrapped in a list."""
    result = copy.deepcopy(document)
    parent = result
    for step in at[:-1]:
        parent = parent[step]
    last = at[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "wrap":
        parent[last] = [parent[last]]
    else:
        parent[last] = copy.deepcopy(value)
    return result


@st.composite
def mutated(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (``payload`` and ``enrichment``) with one to three mutations applied."""
    document = {"payload": spec["payload"], "enrichment": spec.get("enrichment") or {}}
    for _ in range(draw(st.integers(1, 3))):
        candidates = list(paths(document))
        candidates = [p for p in candidates if len(p) > 1]  # keep the payload/enrichment split itself
        if not candidates:
            break
        at = draw(st.sampled_from(candidates))
        operation = draw(st.sampled_from(["replace", "replace", "replace", "delete", "wrap"]))
        value = draw(st.sampled_from(SURPRISES)) if operation == "replace" else None
        document = mutate(document, at, operation, value)
    return {**spec, **document}
