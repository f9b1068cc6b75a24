"""Webhook sources the ingress accepts, by route name."""

from __future__ import annotations

from ledgerflow.ingress.sources.accessplanit import AccessplanitSource
from ledgerflow.ingress.sources.accountingsuite import AccountingSuiteSource
from ledgerflow.ingress.sources.base import SourceSpec
from ledgerflow.ingress.sources.custom import CustomSource
from ledgerflow.ingress.sources.ingenious import IngeniousSource
from ledgerflow.ingress.sources.mercoa import MercoaSource
from ledgerflow.ingress.sources.monite import MoniteSource
from ledgerflow.ingress.sources.standardwebhooks import StandardWebhooksSource

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
        CustomSource(),
    )
}
"""Route name (``/webhooks/{tenant}/{source}[/{object}]``) → its spec."""
