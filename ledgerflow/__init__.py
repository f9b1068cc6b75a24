"""ledgerflow: the CLI and the plumbing every service shares (settings, Kafka, events, metrics)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ledgerflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
