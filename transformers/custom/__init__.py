"""Plain signed or tokened webhooks (``/webhooks/{tenant}/custom``): mapped by a declarative mapping file.

A tenant's ``custom`` source names its mapping file (``mapping:`` in the routing file,
``docs/mappings.md``); the transformer uses it for that tenant's events. Without one, the shipped
identity mapping applies (:data:`ledgerflow.transformers.standardwebhooks.CANONICAL_MAPPING`):
a sender that posts canonical records as ``{"type": "<object>.<anything>", "data": {…}}``.
"""

from __future__ import annotations

from ledgerflow.transformers.base import Router
from ledgerflow.transformers.declarative import mapping_route
from ledgerflow.transformers.standardwebhooks import canonical_mapping

__all__ = ["route"]

route: Router = mapping_route(canonical_mapping())
"""Router of ``ledgerflow.raw.custom`` for tenants without a mapping file of their own."""
