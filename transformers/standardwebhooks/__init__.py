"""Standard Webhooks: events mapped by a declarative mapping file, not by Python.

The shipped mapping (``canonical.yaml``) is the identity for payloads that are already canonical:
``{"type": "bill.created", "data": {<canonical bill>}}`` → ``ledgerflow.bill.v1``. A tenant whose
sender has its own shape names its mapping file in the routing file (``mapping:`` under the
tenant's ``standardwebhooks`` source; ``docs/mappings.md``); the transformer then uses that file
for that tenant's events.
"""

from __future__ import annotations

from pathlib import Path

from ledgerflow.transformers.base import Router
from ledgerflow.transformers.declarative import MappingFile, load_mapping, mapping_route

__all__ = ["CANONICAL_MAPPING", "canonical_mapping", "route"]

CANONICAL_MAPPING = Path(__file__).with_name("canonical.yaml")
"""The identity mapping shipped with ledgerflow."""


def canonical_mapping() -> MappingFile:
    """The shipped identity mapping, loaded and checked.

    Raises:
        MappingError: the shipped file is broken (a packaging error).
    """
    return load_mapping(CANONICAL_MAPPING)


route: Router = mapping_route(canonical_mapping())
"""Router of ``ledgerflow.raw.standardwebhooks`` for tenants without a mapping file of their own."""
