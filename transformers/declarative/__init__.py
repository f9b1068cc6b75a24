"""Declarative mappings: a YAML file of JMESPath expressions instead of a Python mapper.

A tenant maps a source ledgerflow has no code for (any Standard Webhooks sender) to the canonical
contracts with a mapping file (``docs/mappings.md``); the file is checked against the contracts
when it is loaded (:func:`load_mapping`, errors name the file and line) and run per event by
:func:`mapping_route`. ``ledgerflow mapping test FILE --input SAMPLE.json`` runs one by hand.
"""

from __future__ import annotations

from ledgerflow.transformers.declarative.engine import (
    apply_rule,
    map_payload,
    mapping_route,
    parse_body,
    tenant_routers,
)
from ledgerflow.transformers.declarative.loader import MappingError, MappingFile, load_mapping, parse_mapping

__all__ = [
    "MappingError",
    "MappingFile",
    "apply_rule",
    "load_mapping",
    "map_payload",
    "mapping_route",
    "parse_body",
    "parse_mapping",
    "tenant_routers",
]
