"""Source name → router: the one table the transformer worker consults.

Each router maps a :class:`~ledgerflow.transformers.base.RawEvent` of its source to a
:class:`~ledgerflow.transformers.base.Route` or raises :class:`~ledgerflow.transformers.base.SkipEvent`.
"""

from __future__ import annotations

from ledgerflow.transformers import accessplanit, accountingsuite, custom, ingenious, mercoa, monite, standardwebhooks
from ledgerflow.transformers.base import Router

__all__ = ["ROUTERS"]

ROUTERS: dict[str, Router] = {
    "mercoa": mercoa.route,
    "monite": monite.route,
    "ingenious": ingenious.route,
    "accountingsuite": accountingsuite.route,
    "accessplanit": accessplanit.route,
    "standardwebhooks": standardwebhooks.route,
    "custom": custom.route,
}
"""Source name (``ledgerflow.raw.<source>``) → its router."""
