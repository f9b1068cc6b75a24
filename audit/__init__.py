"""The audit store behind the sync-records API: every ``SyncResult``, per record and per attempt.

Modules:
  :mod:`.tables`    SQLAlchemy tables (``sync_records``, ``sync_attempts``, ``canonical_records``);
  :mod:`.migrate`   Alembic migrations shipped in ``migrations/`` and :func:`~.migrate.upgrade`;
  :mod:`.store`     :class:`~.store.AuditStore`, idempotent ingestion and cursor-paginated queries;
  :mod:`.masking`   masking of bank numbers and tokens in what the API returns;
  :mod:`.consumer`  the results consumer (group ``ledgerflow.audit``);
  :mod:`.api`       the FastAPI sync-records API (list, detail, retry);
  :mod:`.service`   :func:`~.service.start_audit`, everything above in one running service.

The model is Monite's accounting synced records (with its "retry push") and Codat's push
operations (``shared/reference/peers.md``).
"""
