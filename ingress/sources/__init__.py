"""Webhook sources the ingress accepts, by route name."""

from __future__ import annotations

from ingress.sources.accessplanit import AccessplanitSource
from ingress.sources.accountingsuite import AccountingSuiteSource
from ingress.sources.base import SourceSpec
from ingress.sources.ingenious import IngeniousSource
from ingress.sources.mercoa import MercoaSource
from ingress.sources.monite import MoniteSource
from ingress.sources.standardwebhooks import StandardWebhooksSource

__all__ = ["SOURCES"]

SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        IngeniousSource(),
        MercoaSource(),
        MoniteSource(),
        AccountingSuiteSource(),
        AccessplanitSource(),
        StandardWebhooksSource(),
    )
}
"""Route name (``/webhooks/{tenant}/{source}[/{object}]``) → its spec."""
