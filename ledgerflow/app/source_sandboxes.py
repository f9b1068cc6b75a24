"""Local source sandboxes for the source writers under ``ledgerflow up`` and ``ledgerflow demo``.

As the stack points an ERP connection without a ``base_url`` at a local ERP sandbox, it points a
tenant's write-back target without an API root at a local source sandbox: for every tenant with a
``writeback`` section (:class:`~ledgerflow.core.settings.WritebackConfig`),

* ``writeback.ingenious`` set, no ``writeback.ingenious.base_url`` and no
  ``sources.ingenious.options.api_base_url`` → the INGENIOUS Public API sandbox
  (:class:`~ledgerflow.transformers.ingenious.sandbox.IngeniousSandbox`), ``api_token`` its token;
* ``writeback.mercoa.mark_paid`` and no ``sources.mercoa.options.api_base_url`` → the Mercoa
  sandbox, ``api_key`` its key;
* ``writeback.monite.mark_paid`` and no ``sources.monite.options.api_base_url`` → the Monite
  sandbox, its ``client_id``/``client_secret`` and ``entity_id`` :data:`MONITE_ENTITY_ID`.

One sandbox per source, shared by the tenants. A source the tenant does not configure at all is
left alone (the source writer's configuration check names it). Options a tenant set (a real API
root) are never replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledgerflow.core.asgi import serve
from ledgerflow.core.settings import Routing, SourceConfig
from ledgerflow.transformers.ingenious.sandbox import IngeniousSandbox
from ledgerflow.transformers.mercoa.sandbox import MercoaSandbox
from ledgerflow.transformers.monite.sandbox import MoniteSandbox

__all__ = ["MONITE_ENTITY_ID", "SourceSandboxes", "start_source_sandboxes"]

MONITE_ENTITY_ID = "monite-sandbox-entity"
"""``entity_id`` the stack gives tenants written back through the local Monite sandbox."""


@dataclass
class SourceSandboxes:
    """The source sandboxes a stack started: source → base URL, and source → the sandbox's state.

    The state objects let a demo or a test seed and read what the sandbox holds
    (``IngeniousSandbox.add_invoice``, ``.objects``, ``.invoices``).
    """

    urls: dict[str, str] = field(default_factory=dict)
    states: dict[str, Any] = field(default_factory=dict)

    @property
    def ingenious(self) -> IngeniousSandbox | None:
        """The INGENIOUS sandbox, when started."""
        state = self.states.get("ingenious")
        return state if isinstance(state, IngeniousSandbox) else None


def _options(sandbox: Any, source: str, url: str) -> dict[str, Any]:
    """The options pointing ``source`` at its started sandbox (API root and the credentials it accepts)."""
    if source == "ingenious":
        return {"api_base_url": url, "api_token": sandbox.token}
    if source == "mercoa":
        return {"api_base_url": url, "api_key": sandbox.api_key}
    return {
        "api_base_url": url,
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "entity_id": MONITE_ENTITY_ID,
    }


_FACTORIES: dict[str, Callable[[], Any]] = {
    "ingenious": IngeniousSandbox,
    "mercoa": MercoaSandbox,
    "monite": MoniteSandbox,
}


async def start_source_sandboxes(
    stack: contextlib.AsyncExitStack, routing: Routing, host: str = "127.0.0.1"
) -> tuple[Routing, SourceSandboxes]:
    """Start the source sandboxes ``routing``'s write-back needs inside ``stack``; return the wired routing.

    Returns:
        ``routing`` with the tenants' source options pointed at the sandboxes, and the sandboxes.

    Raises:
        OSError: a sandbox cannot listen on ``host``.
    """
    started = SourceSandboxes()
    tenants = dict(routing.tenants)
    for name, tenant in routing.tenants.items():
        wb = tenant.writeback
        if wb is None:
            continue
        wanted = []
        if wb.ingenious is not None and wb.ingenious.base_url is None:
            wanted.append("ingenious")
        if wb.mercoa.mark_paid:
            wanted.append("mercoa")
        if wb.monite.mark_paid:
            wanted.append("monite")
        sources: dict[str, SourceConfig] = dict(tenant.sources)
        for source in wanted:
            config = sources.get(source)
            if config is None or config.options.get("api_base_url"):
                continue
            if source not in started.urls:
                sandbox = _FACTORIES[source]()
                started.states[source] = sandbox
                started.urls[source] = await stack.enter_async_context(serve(sandbox.app(), host=host))
            options = {**config.options, **_options(started.states[source], source, started.urls[source])}
            sources[source] = config.model_copy(update={"options": options})
        tenants[name] = tenant.model_copy(update={"sources": sources})
    return routing.model_copy(update={"tenants": tenants}), started
