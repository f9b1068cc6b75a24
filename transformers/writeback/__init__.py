"""Source writers: records read from the ERPs (``<prefix>.inbound.<kind>.v1``) written into the sources.

INGENIOUS accounting objects and payments (:mod:`ledgerflow.transformers.ingenious.writer`), Mercoa
invoice status (:mod:`ledgerflow.transformers.mercoa.writer`), Monite payable mark-as-paid
(:mod:`ledgerflow.transformers.monite.writer`); the runtime in :mod:`.runtime`, the entry in
:mod:`.main` (``ledgerflow source-writer``). See ``docs/writeback.md``.
"""
