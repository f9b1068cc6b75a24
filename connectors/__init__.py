"""ERP connectors: one package per ERP, each exposing one connector class.

The shared runtime (:mod:`ledgerflow.connectors.runtime`) consumes canonical topics in one consumer group
per ERP connection, asks the binder whether a record was booked already, calls the connector,
retries what is retriable, and writes one ``SyncResult`` per record.
"""
