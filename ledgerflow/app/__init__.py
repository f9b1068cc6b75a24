"""Composition: the CLI, the in-process stack (``ledgerflow up``), the demo and replay.

The only layer that imports the services; each service is started through its own entry.
"""
