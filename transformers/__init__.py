"""Transformer workers: raw source events → canonical contracts, one mapper per (source, object).

A mapper is a pure function from a :class:`~ledgerflow.transformers.base.RawEvent` to canonical records;
enrichment (fetching what a thin webhook only points to) runs before it through small ports.
"""
