"""One set of sources: what the ingress accepts, what the transformer routes and the ``Source`` enum agree.

A source the ingress accepts but no transformer reads would pile up unread in its raw topic
(Standard Webhooks before it had a route); a route without an ingress spec would read a topic
nothing writes; the enum names the raw topics that are created.
"""

from __future__ import annotations

from ledgerflow.contracts import Source
from ledgerflow.ingress.sources import SOURCES
from ledgerflow.transformers.registry import ROUTERS


def test_ingress_sources_transformer_routes_and_the_source_enum_are_the_same_set() -> None:
    enum = {source.value for source in Source}
    assert set(SOURCES) == enum, f"ingress only: {set(SOURCES) - enum}, enum only: {enum - set(SOURCES)}"
    assert set(ROUTERS) == enum, f"routes only: {set(ROUTERS) - enum}, enum only: {enum - set(ROUTERS)}"
