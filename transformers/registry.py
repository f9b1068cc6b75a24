"""Source name → router: the one table the transformer worker consults.

Each router maps a :class:`~transformers.base.RawEvent` of its source to a
:class:`~transformers.base.Route` or raises :class:`~transformers.base.SkipEvent`.
"""

from __future__ import annotations

from transformers import accessplanit, accountingsuite, ingenious, mercoa, monite
from transformers.base import Router

__all__ = ["ROUTERS"]

ROUTERS: dict[str, Router] = {
    "mercoa": mercoa.route,
    "monite": monite.route,
    "ingenious": ingenious.route,
    "accountingsuite": accountingsuite.route,
    "accessplanit": accessplanit.route,
}
"""Source name (``ledgerflow.raw.<source>``) → its router."""
