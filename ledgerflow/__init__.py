"""ledgerflow: webhooks from AP and project-finance systems, booked into ERPs over Kafka.

One import namespace, in layers (``tests/test_architecture.py`` enforces them with import-linter):

* :mod:`ledgerflow.app` — composition: the CLI, the in-process stack, the demo, replay;
* the services — :mod:`ledgerflow.ingress`, :mod:`ledgerflow.transformers`,
  :mod:`ledgerflow.connectors`, :mod:`ledgerflow.audit` — none imports another;
* :mod:`ledgerflow.core` — the plumbing every service shares (settings, Kafka, events, metrics,
  state store, delivery discipline);
* :mod:`ledgerflow.contracts` — the wire contract: canonical models, topic and header names,
  error codes.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ledgerflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
