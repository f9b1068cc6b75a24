"""Topic names (the prefix is a setting, default ``ledgerflow``); see DESIGN.md "Topics"."""

from __future__ import annotations

from dataclasses import dataclass

from ledgerflow.contracts import OBJECT_MODELS, Source
from ledgerflow.contracts.reference import INBOUND_KINDS

__all__ = ["RETRYING_STAGES", "RETRY_TIERS", "STAGES", "Topics"]

RETRY_TIERS = 3
"""Retry topics ``<prefix>.retry.<stage>.1..3`` where the connectors (stage ``connector``) and the
source writers (stage ``writeback``) park transient failures."""

STAGES = ("ingress", "transform", "connector", "writeback", "audit")
"""Pipeline stages that own a dead-letter topic ``<prefix>.dlq.<stage>`` (``writeback``: the source
writers, which write records read from the ERPs into the sources)."""

RETRYING_STAGES = ("connector", "writeback")
"""Stages that park retriable failures on their own retry topics ``<prefix>.retry.<stage>.<tier>``."""


@dataclass(frozen=True, slots=True)
class Topics:
    """Names of every topic for one topic prefix.

    >>> Topics("ledgerflow").raw("mercoa")
    'ledgerflow.raw.mercoa'
    """

    prefix: str = "ledgerflow"

    def raw(self, source: str) -> str:
        """Topic of raw webhook bodies from ``source`` (key: source record id)."""
        return f"{self.prefix}.raw.{source}"

    def canonical(self, object_type: str) -> str:
        """Topic of canonical ``object_type`` records (key: canonical id)."""
        return f"{self.prefix}.{object_type}.v1"

    def inbound(self, kind: str) -> str:
        """Topic of reference records of ``kind`` read from the ERPs (key: ``<connection>:<entity>:<erp id>``).

        ``<prefix>.inbound.<kind>.v1``; kinds are :data:`~ledgerflow.contracts.reference.INBOUND_KINDS`.
        Distinct from the canonical topics, so no outbound connector ever reads them.
        """
        return f"{self.prefix}.inbound.{kind}.v1"

    @property
    def results(self) -> str:
        """Topic of ``SyncResult`` events (key: canonical id)."""
        return f"{self.prefix}.results.v1"

    def dlq(self, stage: str) -> str:
        """Dead-letter topic of ``stage`` (value: the input as received, error in headers)."""
        return f"{self.prefix}.dlq.{stage}"

    def retry(self, stage: str, tier: int) -> str:
        """Retry topic ``tier`` (1-based) of ``stage``, for parked transient failures."""
        return f"{self.prefix}.retry.{stage}.{tier}"

    def group(self, role: str) -> str:
        """Consumer group of a role: ``<prefix>.transformer``, ``<prefix>.connector.<name>``, ``<prefix>.audit``.

        Deriving groups from the prefix keeps two pipelines sharing one Kafka cluster apart.
        """
        return f"{self.prefix}.{role}"

    def all(self) -> list[str]:
        """Every topic the pipeline uses, for creation on the embedded broker and Strimzi."""
        names = [self.raw(s.value) for s in Source]
        names += [self.canonical(o) for o in OBJECT_MODELS]
        names += [self.inbound(k) for k in INBOUND_KINDS]
        names.append(self.results)
        names += [self.dlq(s) for s in STAGES]
        names += [self.retry(stage, tier) for stage in RETRYING_STAGES for tier in range(1, RETRY_TIERS + 1)]
        return names
