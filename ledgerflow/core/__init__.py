"""The plumbing every ledgerflow service shares: settings, Kafka, CloudEvents, metrics, state, delivery.

Nothing here imports a service (:mod:`ledgerflow.ingress`, :mod:`ledgerflow.transformers`,
:mod:`ledgerflow.connectors`, :mod:`ledgerflow.audit`) or the composition (:mod:`ledgerflow.app`).
"""
