"""Validate NetSuite request bodies against the account's OpenAPI description (sandbox side).

NetSuite publishes each account's records as OpenAPI 3.0 from its metadata catalog
(``GET /services/rest/record/v1/metadata-catalog``; reference ``erp_apis.md`` §3.5); ledgerflow's
tests use the captured copy ``specs/netsuite-oas.json``. The OpenAPI 3.0 dialect is turned into
JSON Schema draft 7 once per file:

* ``nullable: true`` → the type also admits ``null``;
* ``oneOf`` → ``anyOf``: the description's reference unions (``entity`` is ``customer | nsResource
  | vendor``) have no discriminator and no required fields, so ``{"id": "12"}`` matches every
  branch and strict ``oneOf`` would reject every valid reference;
* every object schema with ``properties`` gets ``additionalProperties: false``: this is NetSuite's
  ``X-NetSuite-PropertyNameValidation: Error`` behaviour, which catches misspelt field names;
* ``readOnly`` properties are rejected in request bodies (NetSuite ignores or refuses them);
* ``format`` is checked (``date``: an ISO 8601 calendar date), as NetSuite refuses other forms.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

__all__ = ["BodyProblem", "RecordSchemas", "load_schemas"]


class BodyProblem:
    """One validation problem: the NetSuite ``o:errorPath`` (dotted JSON path) and a message."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __repr__(self) -> str:
        return f"BodyProblem({self.path!r}, {self.message!r})"


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert(value) for key, value in node.items()}
    if "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.pop("readOnly", False):
        out = {"not": {}, "description": "read-only property"}
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _dotted(error: ValidationError) -> str:
    parts: list[str] = []
    for segment in error.absolute_path:
        if isinstance(segment, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{segment}]"]
        else:
            parts.append(str(segment))
    return ".".join(parts)


class RecordSchemas:
    """The record schemas of one NetSuite OpenAPI description, as draft-7 validators.

    Args:
        document: the parsed OpenAPI 3.0 JSON (``components.schemas`` holds the records).

    """

    def __init__(self, document: dict[str, Any]) -> None:
        self._components = {"schemas": _convert(document.get("components", {}).get("schemas", {}))}
        self._validators: dict[str, Draft7Validator] = {}

    @property
    def record_types(self) -> frozenset[str]:
        """Record types the description defines (``vendorBill``, ``vendor``, ``customer``…)."""
        return frozenset(self._components["schemas"])

    def fields(self, record_type: str) -> frozenset[str] | None:
        """The field names of ``record_type`` (read-only ones included), or None when not described."""
        schema = self._components["schemas"].get(record_type)
        if not isinstance(schema, dict):
            return None
        return frozenset(schema.get("properties") or {})

    def validator(self, record_type: str) -> Draft7Validator | None:
        """The validator of ``record_type``, or None when the description does not define it."""
        if record_type not in self._components["schemas"]:
            return None
        if record_type not in self._validators:
            root = {"$ref": f"#/components/schemas/{record_type}", "components": self._components}
            # NetSuite refuses malformed dates ("01/15/2024" in tranDate): check ``format`` too.
            self._validators[record_type] = Draft7Validator(root, format_checker=Draft7Validator.FORMAT_CHECKER)
        return self._validators[record_type]

    def problems(self, record_type: str, body: Any) -> Iterator[BodyProblem]:
        """Yield every problem of ``body`` as a ``record_type`` request (none when not described)."""
        validator = self.validator(record_type)
        if validator is None:
            return
        for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
            if error.validator == "not":
                message = f"{_dotted(error)} is read-only"
            elif error.validator == "additionalProperties":
                message = f"unknown field: {error.message}"
            else:
                message = error.message
            yield BodyProblem(_dotted(error), message)


@lru_cache(maxsize=4)
def load_schemas(path: Path) -> RecordSchemas:
    """Load and convert a NetSuite OpenAPI JSON file (cached per path).

    Raises:
        OSError: the file cannot be read.
        json.JSONDecodeError: it is not JSON.

    """
    return RecordSchemas(json.loads(path.read_text(encoding="utf-8")))
