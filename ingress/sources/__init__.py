"""Webhook sources the ingress accepts, by route name."""

from __future__ import annotations

from ingress.sources.base import SourceSpec
from ingress.sources.mercoa import MercoaSource

__all__ = ["SOURCES"]

SOURCES: dict[str, SourceSpec] = {spec.name: spec for spec in (MercoaSource(),)}
"""Route name (``/webhooks/{tenant}/{source}``) → its spec."""
