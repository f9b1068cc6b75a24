"""What every ERP connection's ``options`` and ``credentials`` may say: the typed base models.

Each connector package has a ``config.py`` with its ``Options`` (a subclass of
:class:`ConnectionOptions` or :class:`OAuthOptions`) and ``Credentials`` (a subclass of
:class:`ConnectionCredentials`). Both forbid unknown keys, so a typo such as
``rate_limit_per_minut`` is an error naming the key instead of a setting silently ignored; they
are checked when a command loads the routing file (:func:`ledgerflow.connectors.registry.check_routing`)
and when a connector is built (:func:`validate_connection`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ledgerflow.connectors.base import PermanentError
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.settings import ConnectionConfig

__all__ = [
    "RENAMED_OPTIONS",
    "ConnectionCredentials",
    "ConnectionOptions",
    "OAuthCredentials",
    "OAuthOptions",
    "ReferenceSyncOptions",
    "describe_errors",
    "validate_connection",
]

RENAMED_OPTIONS: dict[str, str] = {
    "default_gl_account": "default_expense_account",
    "default_item_id": "default_item",
}
"""Option names that were spelled differently by some connectors (old → the one name now)."""

AccountId = str | int
"""An ERP id or code of an account, item, tax code… as the routing file gives it (``61`` or ``"61"``)."""


class ReferenceSyncOptions(BaseModel):
    """``options.reference_sync``: when ``ledgerflow sync-reference`` reads the connection (ERPs with a reader)."""

    model_config = ConfigDict(extra="forbid")

    interval_seconds: float = Field(900, gt=0, description="Seconds between scheduled passes (jittered by ±10 %).")
    enabled: bool = Field(True, description="false: sync-reference --all and ledgerflow up do not read it.")


class ConnectionOptions(BaseModel):
    """Options every connection takes (the connector runtime, the HTTP client, the binder)."""

    model_config = ConfigDict(extra="forbid")

    renamed: ClassVar[dict[str, str]] = RENAMED_OPTIONS

    book_unapproved: bool = Field(
        False, description="Also book documents not yet approved in the source (draft, submitted)."
    )
    retry: dict[str, Any] | None = Field(
        None,
        description="In-place retries and park delays: attempts, timeout, wait_initial, wait_max, "
        "wait_max_retry_after (seconds), park_delays (list of seconds, one per retry tier).",
    )
    reference_cache_seconds: float = Field(
        300, ge=0, description="Seconds a reference binder row (vendor-ref:…) is cached in process; 0 = off."
    )
    reference_map: dict[str, Any] | None = Field(
        None, description="Per reference kind: source ids → ERP ids, overriding what the source said."
    )
    reference_check: bool = Field(
        True,
        description="Refuse a record naming a GL account, tax rate, tracking value or vendor the connection's "
        "complete reference cache does not hold (reference.unknown, before any ERP call); false = off.",
    )
    reference_refresh_seconds: float = Field(
        10, ge=0, description="Seconds the stored mapping tables and cache status are kept in process; 0 = re-read."
    )
    verify_read_back: bool = Field(
        True, description="Read the ERP record back after booking and compare it with the canonical document."
    )
    rate_limit_per_minute: float | None = Field(
        None, gt=0, description="Requests per minute to the ERP (default: the vendor's published limit)."
    )
    rate_limit_burst: int | None = Field(
        None,
        ge=1,
        description="Requests the rate limit lets through at once after a pause (default max_concurrency); "
        "1 keeps every rolling minute under rate_limit_per_minute (vendors counting in a sliding window).",
    )
    max_concurrency: int | None = Field(None, ge=1, description="ERP requests in flight at once.")
    max_batch: int | None = Field(
        None,
        ge=1,
        description="Records per ERP batch write at most (default: the ERP's largest batch, Xero 50, "
        "QuickBooks 30; 1 = one request per record). connectors/batching.py.",
    )
    batch_linger_ms: float = Field(
        200, ge=0, description="Milliseconds a record waits for others to share its ERP batch write."
    )
    dedicated: bool = Field(
        False,
        description="Served by its own worker (ledgerflow connector --connection NAME, its own consumer group), "
        "not by its ERP kind's fleet (ledgerflow connector --erp KIND).",
    )
    daily_limit: int | None = Field(
        None,
        ge=1,
        description="ERP requests per day (default: the vendor's published limit, e.g. Xero 5,000; none for "
        "QuickBooks); once spent the connector fleet parks the connection's records until the reset.",
    )
    timeout_seconds: float | None = Field(None, gt=0, description="Timeout of one ERP request, in seconds.")
    unresolved_tracking: Literal["omit"] | None = Field(
        None,
        description="omit: book lines whose tracking reference (cost code, project, class…) has no ERP id "
        "without it; unset: such a line is reference.unresolved (connectors/tracking.py).",
    )
    error_overrides: dict[str, Any] | None = Field(
        None,
        description='Reclassify ERP errors: "http.<status>" or a vendor code → retriable | permanent | '
        "{retriable: bool, code: <ErrorCode>}.",
    )
    reference_sync: ReferenceSyncOptions | None = Field(
        None, description="Schedule of the reference sync: interval_seconds (900), enabled (true)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_old_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [name for name in data if name in cls.renamed]
            if old:
                raise ValueError(
                    "; ".join(f"option {name} is now {cls.renamed[name]} (rename it)" for name in sorted(old))
                )
        return data


class OAuthOptions(ConnectionOptions):
    """Options of a connection that gets OAuth 2.0 tokens (:mod:`ledgerflow.core.outbound.oauth`)."""

    token_url: str | None = Field(None, description="Token endpoint (default: the vendor's).")
    scope: str | None = Field(None, description="Scope asked for with client credentials.")
    refresh_margin_seconds: float | None = Field(
        None, ge=0, description="Refresh an access token this many seconds before it expires (default 300)."
    )


class ConnectionCredentials(BaseModel):
    """Credentials of a connection (``credentials`` in the routing file or files in ``credentials_dir``)."""

    model_config = ConfigDict(extra="forbid")


class OAuthCredentials(ConnectionCredentials):
    """OAuth 2.0 client credentials and, for authorization-code flows, the first refresh token."""

    client_id: SecretStr | None = Field(None, description="OAuth client id.")
    client_secret: SecretStr | None = Field(None, description="OAuth client secret.")
    refresh_token: SecretStr | None = Field(None, description="First refresh token (authorization-code flow).")
    token_url: SecretStr | None = Field(None, description="Token endpoint, when it is per tenant.")
    scope: SecretStr | None = Field(None, description="Scope asked for with client credentials.")


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """``<prefix><key>: message`` for each error of a validation, joined by ``; `` (the key named first)."""
    parts = []
    for err in exc.errors():
        where = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else prefix.rstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def validate_connection(
    name: str,
    config: ConnectionConfig,
    options: type[BaseModel],
    credentials: type[BaseModel],
) -> tuple[BaseModel, BaseModel]:
    """Validate ``config.options`` and ``config.credentials`` against a connector's models.

    Raises:
        PermanentError: ``config.invalid``, naming the connection and each wrong key.
    """
    problems = []
    try:
        opts = options.model_validate(config.options)
    except ValidationError as exc:
        problems.append(describe_errors(exc, "options."))
    try:
        creds = credentials.model_validate(config.credentials)
    except ValidationError as exc:
        problems.append(describe_errors(exc, "credentials."))
    if problems:
        raise PermanentError(ErrorCode.CONFIG_INVALID, f"connection {name!r}: {'; '.join(problems)}")
    return opts, creds
