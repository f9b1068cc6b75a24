"""Runtime settings (environment, prefix ``LEDGERFLOW_``) and the YAML routing file.

The routing file says which tenants exist, which sources each tenant has and their secrets,
which ERP connections exist and which tenants and object types each connection takes::

    tenants:
      acme:
        sources:
          mercoa: {tokens: [s3cr3t]}            # several at once while rotating
          monite: {secrets_file: /run/secrets/monite}
        connections: [qbo-main, xero-main]
    connections:
      qbo-main:
        erp: quickbooks
        base_url: https://quickbooks.api.intuit.com
        objects: [bill, vendor, payment]
        credentials: {realm_id: "9130...", client_id: ..., client_secret: ..., refresh_token: ...}

Secrets are ``SecretStr`` (never printed) and may be read from mounted files (``*_file``), one
secret per line, so Kubernetes Secrets can rotate them without a restart of the config.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledgerflow.contracts import OBJECT_MODELS
from ledgerflow.contracts.common import Source
from ledgerflow.contracts.reference import INBOUND_KINDS
from ledgerflow.contracts.topics import Topics

__all__ = [
    "ConfigError",
    "ConnectionConfig",
    "IngeniousWriteback",
    "PaymentMarking",
    "Routing",
    "Settings",
    "SourceConfig",
    "TenantConfig",
    "WritebackConfig",
    "demo_routing",
    "load_routing",
    "normalize_state_url",
]


class ConfigError(ValueError):
    """The settings or the routing file are invalid; the message says where and why."""


def _read_secret_file(path: Path) -> list[SecretStr]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from exc
    return [SecretStr(line.strip()) for line in lines if line.strip()]


class SourceConfig(BaseModel):
    """Credentials of one source for one tenant.

    ``secrets`` are the signing secrets (Monite, AccountingSuite, Standard Webhooks) or tokens
    (Mercoa, accessplanit, INGENIOUS static header value). All listed values are accepted, so a
    new secret can be added before the old one is removed.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    secrets: list[SecretStr] = Field(
        default_factory=list, alias="tokens", description="Accepted secrets or tokens (rotation: several)."
    )
    secrets_file: Path | None = Field(None, alias="tokens_file", description="File with one secret per line.")
    header: str | None = Field(
        None, description="Header carrying the credential (INGENIOUS static header, accessplanit API key)."
    )
    tolerance_seconds: int = Field(300, ge=0, description="Accepted age of a signed timestamp.")
    digest: Literal["sha256", "sha1", "sha512"] = Field("sha256", description="HMAC digest (AccountingSuite).")
    encoding: Literal["base64", "hex"] = Field("base64", description="Signature encoding (AccountingSuite).")
    options: dict[str, Any] = Field(default_factory=dict, description="Source-specific options.")
    mapping: Path | None = Field(
        None,
        description="Declarative mapping file (docs/mappings.md) for this tenant's events of the source; "
        "Standard Webhooks without one: the shipped identity mapping for canonical payloads.",
    )

    def all_secrets(self) -> list[SecretStr]:
        """Inline secrets plus those in :attr:`secrets_file`, in that order.

        Raises:
            ConfigError: if the secrets file cannot be read.

        """
        extra = _read_secret_file(self.secrets_file) if self.secrets_file else []
        return [*self.secrets, *extra]


class ConnectionConfig(BaseModel):
    """One ERP connection: one consumer group, one set of credentials, one rate-limit budget."""

    model_config = ConfigDict(extra="forbid")

    erp: str = Field(
        description="ERP kind: a key of the connector registry (ledgerflow.connectors.registry.ERPS), "
        "checked when the routing is loaded by a command."
    )
    base_url: str | None = Field(None, description="API base URL; None = the local sandbox.")
    objects: list[str] = Field(
        default_factory=lambda: ["bill"], description="Canonical object types this connection takes."
    )

    @field_validator("objects")
    @classmethod
    def _known_objects(cls, value: list[str]) -> list[str]:
        unknown = [o for o in value if o not in OBJECT_MODELS]
        if unknown:
            raise ValueError(
                f"unknown object type(s) {', '.join(map(repr, unknown))}: use one of {', '.join(OBJECT_MODELS)}"
            )
        return value

    credentials: dict[str, SecretStr] = Field(default_factory=dict, description="ERP credentials.")
    credentials_dir: Path | None = Field(
        None,
        description="Folder of mounted secret files, one per credential (file name = key, content = value); "
        "they complement `credentials` (a Kubernetes Secret mounted as a volume).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Connector-specific options.")

    @model_validator(mode="after")
    def _read_credentials_dir(self) -> ConnectionConfig:
        # The folder is a Secret mounted only into this connection's worker pods: every other
        # service reads the same routing file without it, so a missing folder is not an error
        # here. The connection's own worker refuses to start without it (``credentials_mounted``).
        if self.credentials_dir is None or not self.credentials_dir.is_dir():
            return self
        for path in sorted(self.credentials_dir.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                self.credentials.setdefault(path.name, SecretStr(path.read_text(encoding="utf-8").strip()))
        return self

    @property
    def credentials_mounted(self) -> bool:
        """False when ``credentials_dir`` is configured but not present in this process's file system."""
        return self.credentials_dir is None or self.credentials_dir.is_dir()


IngeniousObject = Literal["company", "entity", "cost_code", "project", "business_unit"]
"""INGENIOUS accounting objects the source writer creates: Accounting Companies (vendors), Accounting
Entities (GL accounts), Accounting Cost Codes, Projects and Business Units."""

IngeniousPath = Literal[
    "company_list",
    "company",
    "entity_list",
    "entity",
    "cost_code_list",
    "cost_code",
    "project_list",
    "project",
    "business_unit_list",
    "business_unit",
    "invoice_payments",
]
"""Names of the INGENIOUS Public API paths the source writer calls (defaults and the ASSUMPTION
marks: ``ledgerflow.transformers.ingenious.writer``)."""

IngeniousField = Literal["custom_id", "name", "code", "active", "amount", "currency", "paid_on"]
"""Names of the INGENIOUS fields the source writer sends (defaults: ``ledgerflow.transformers.ingenious.writer``)."""

_DEFAULT_INGENIOUS_OBJECTS: dict[str, IngeniousObject] = {
    "vendor": "company",
    "gl_account": "entity",
    "project": "project",
    "tracking": "cost_code",
    "tracking:Department": "business_unit",
}


class IngeniousWriteback(BaseModel):
    """What the source writer writes into INGENIOUS for one tenant (``writeback.ingenious``).

    ``objects`` maps a reference kind (``vendor``), or a kind and the ERP's entity
    (``tracking:Department``, more specific, wins), to the INGENIOUS object it becomes. ``paths`` and
    ``fields`` override the writer's defaults by name (the Public API reference is not public:
    ``sources.md`` §1.1). Credentials and the base URL come from the tenant's
    ``sources.ingenious.options`` (``api_base_url``, ``api_token``) unless ``base_url`` is set here.
    """

    model_config = ConfigDict(extra="forbid")

    objects: dict[str, IngeniousObject] = Field(
        default_factory=lambda: dict(_DEFAULT_INGENIOUS_OBJECTS),
        description="Reference kind (or `kind:ERP entity`) → INGENIOUS object; a kind not listed is not written.",
    )
    payments: bool = Field(True, description="Record ERP payments on the INGENIOUS invoices they pay.")
    base_url: str | None = Field(None, description="Public API root; default: sources.ingenious.options.api_base_url.")
    paths: dict[IngeniousPath, str] = Field(default_factory=dict, description="Path overrides by name.")
    fields: dict[IngeniousField, str] = Field(default_factory=dict, description="Field-name overrides by name.")

    @field_validator("objects")
    @classmethod
    def _known_kinds(cls, value: dict[str, IngeniousObject]) -> dict[str, IngeniousObject]:
        unknown = sorted(k for k in value if k.split(":", 1)[0] not in INBOUND_KINDS or k.startswith("payment"))
        if unknown:
            kinds = ", ".join(k for k in INBOUND_KINDS if k != "payment")
            raise ValueError(f"unknown reference kind(s) {', '.join(map(repr, unknown))}: use one of {kinds}")
        return value


class PaymentMarking(BaseModel):
    """Marking source documents paid when the ERP books or makes their payment (Mercoa, Monite); off by default."""

    model_config = ConfigDict(extra="forbid")

    mark_paid: bool = Field(False, description="Mark the source invoice / payable paid from ERP payments.")


class WritebackConfig(BaseModel):
    """A tenant's source writers (``tenants.<t>.writeback``): records read from its ERPs written into its sources.

    Example::

        writeback:
          connections: [qbo-main]          # default: the tenant's connections
          ingenious: {}                    # vendors, GL accounts, projects, tracking; payments
          mercoa: {mark_paid: true}
          monite: {mark_paid: true}

    A section left out writes nothing into that source; INGENIOUS needs the section, Mercoa and
    Monite payment marking needs ``mark_paid: true``. The source's API credentials are the tenant's
    ``sources.<source>.options`` (as for enrichment). Nothing is ever written into an ERP.
    """

    model_config = ConfigDict(extra="forbid")

    connections: list[str] | None = Field(
        None, description="ERP connections whose records are written into this tenant's sources; None: all of its own."
    )
    ingenious: IngeniousWriteback | None = Field(None, description="INGENIOUS writes; None: none.")
    mercoa: PaymentMarking = Field(default_factory=PaymentMarking, description="Mercoa invoice status updates.")
    monite: PaymentMarking = Field(default_factory=PaymentMarking, description="Monite payable mark-as-paid.")


class TenantConfig(BaseModel):
    """A tenant: its sources and the ERP connections its records go to."""

    model_config = ConfigDict(extra="forbid")

    sources: dict[str, SourceConfig] = Field(default_factory=dict, description="Source name → credentials.")
    connections: list[str] = Field(default_factory=list, description="ERP connections fed by this tenant.")
    writeback: WritebackConfig | None = Field(
        None, description="Source writers: records read from the ERPs written into this tenant's sources."
    )

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        known = [s.value for s in Source]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"unknown source(s) {', '.join(map(repr, unknown))}: use one of {', '.join(known)} "
                "(a sender ledgerflow has no code for is a standardwebhooks source with a mapping file)"
            )
        return value


class Routing(BaseModel):
    """The whole routing file."""

    model_config = ConfigDict(extra="forbid")

    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _connections_exist(self) -> Routing:
        for name, tenant in self.tenants.items():
            for conn in tenant.connections:
                if conn not in self.connections:
                    raise ValueError(f"tenant {name!r} routes to unknown connection {conn!r}")
            for conn in (tenant.writeback.connections or []) if tenant.writeback else []:
                if conn not in self.connections:
                    raise ValueError(f"tenant {name!r} writes back from unknown connection {conn!r}")
        return self

    def tenants_for(self, connection: str) -> set[str]:
        """Tenants whose records go to ``connection``."""
        return {name for name, t in self.tenants.items() if connection in t.connections}

    def writeback_tenants(self, connection: str) -> dict[str, WritebackConfig]:
        """Tenants whose sources take the records read from ``connection``, with their writeback config.

        A tenant takes them when it has a ``writeback`` section and ``connection`` is in its
        ``writeback.connections`` (default: the tenant's own ``connections``).
        """
        found: dict[str, WritebackConfig] = {}
        for name, tenant in self.tenants.items():
            wb = tenant.writeback
            if wb is not None and connection in (wb.connections if wb.connections is not None else tenant.connections):
                found[name] = wb
        return found


def load_routing(path: Path) -> Routing:
    """Read and validate a routing YAML file.

    Raises:
        ConfigError: the file is missing, not YAML, or does not match :class:`Routing`.

    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read routing file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"routing file {path} is not valid YAML: {exc}") from exc
    try:
        return Routing.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ConfigError(f"routing file {path} is invalid: {problems}") from exc


def demo_routing() -> Routing:
    """Routing used when no file is configured: tenant ``demo`` → local QuickBooks and Xero sandboxes.

    The Mercoa token of tenant ``demo`` is ``demo-token``; never use this outside a laptop.
    """
    return Routing.model_validate(
        {
            "tenants": {
                "demo": {
                    "sources": {"mercoa": {"tokens": ["demo-token"]}},
                    "connections": ["quickbooks", "xero"],
                }
            },
            "connections": {
                "quickbooks": {"erp": "quickbooks", "objects": ["bill", "vendor"]},
                "xero": {"erp": "xero", "objects": ["bill", "vendor"]},
            },
        }
    )


_STATE_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_state_url(url: str) -> str:
    """The async SQLAlchemy URL for ``LEDGERFLOW_STATE_URL`` in the forms operators are handed.

    ``postgres://…`` and ``postgresql://…`` (what Heroku, RDS consoles and Kubernetes operators
    print) become ``postgresql+asyncpg://…``, and libpq's ``sslmode=…`` query parameter becomes
    asyncpg's ``ssl=…``; ``sqlite:///…`` becomes ``sqlite+aiosqlite:///…``. Already-async URLs are
    kept as they are.

    Raises:
        ValueError: another scheme or driver (ledgerflow runs on asyncpg or aiosqlite); the message
            names the setting and the accepted forms.

    """
    scheme, sep, rest = url.partition("://")
    driver = _STATE_DRIVERS.get(scheme.lower()) if sep else None
    if driver is None:
        raise ValueError(
            f"LEDGERFLOW_STATE_URL {scheme + sep if sep else url!r}… is not supported: use postgresql://, "
            "postgres://, postgresql+asyncpg:// (PostgreSQL via asyncpg) or sqlite:///, sqlite+aiosqlite:/// (a file)"
        )
    if driver == "postgresql+asyncpg" and "sslmode=" in rest:
        base, _, query = rest.partition("?")
        params = [p.replace("sslmode=", "ssl=", 1) if p.startswith("sslmode=") else p for p in query.split("&")]
        rest = f"{base}?{'&'.join(params)}"
    return f"{driver}://{rest}"


class Settings(BaseSettings):
    """Process settings from the environment (``LEDGERFLOW_*``) or a ``.env`` file.

    ``kafka_bootstrap_servers`` unset means: start the embedded Tansu broker on loopback.
    """

    model_config = SettingsConfigDict(env_prefix="LEDGERFLOW_", env_file=".env", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(None, description="Kafka bootstrap servers, comma-separated.")
    kafka_enable_idempotence: bool | None = Field(
        None, description="Producer idempotence; default: on for real Kafka, off for the embedded broker."
    )
    # Kafka security: one place for every client (ledgerflow.core.kafka_security).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects (TLS and/or SASL)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"] | None = (
        Field(None, description="SASL mechanism (required with SASL_*); AWS_MSK_IAM signs with the AWS chain.")
    )
    kafka_sasl_username: str | None = Field(None, description="SASL PLAIN/SCRAM user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL PLAIN/SCRAM password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for the brokers' TLS certificates.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted client key.")
    kafka_ssl_check_hostname: bool = Field(True, description="Check the broker certificate's host name.")
    kafka_oauth_token_url: str | None = Field(None, description="OIDC token endpoint (SASL OAUTHBEARER).")
    kafka_oauth_client_id: str | None = Field(None, description="OIDC client id (SASL OAUTHBEARER).")
    kafka_oauth_client_secret: SecretStr | None = Field(None, description="OIDC client secret (SASL OAUTHBEARER).")
    kafka_oauth_scope: str | None = Field(None, description="OIDC scopes, space-separated (SASL OAUTHBEARER).")
    kafka_aws_region: str | None = Field(None, description="AWS region of the MSK cluster (SASL AWS_MSK_IAM).")
    kafka_client_id: str = "ledgerflow"
    topic_prefix: str = Field("ledgerflow", description="Prefix of every topic name.")
    topic_partitions: int = Field(6, ge=1, description="Partitions of topics the runtime creates.")
    routing_file: Path | None = Field(None, description="YAML routing file; unset = the demo routing.")
    state_url: str = Field(
        "sqlite+aiosqlite:///ledgerflow-state.db",
        description="SQLAlchemy async URL of the state store (binder, tokens, audit).",
    )
    shared_budgets: bool = Field(
        False,
        description="Count every ERP request of a connection against per-minute and per-day counters in the "
        "state store shared by all replicas and the sync-reference service (the vendor's quota is the "
        "organisation's, not the process's); false: each process keeps its own budget.",
    )
    connections_key: SecretStr | None = Field(
        None,
        description="Fernet key encrypting the credentials of connections kept in the state store "
        "(`ledgerflow connections`); prefer LEDGERFLOW_CONNECTIONS_KEY_FILE from a mounted Secret.",
    )
    connections_key_file: Path | None = Field(
        None,
        description="File with Fernet keys, one per line: the first encrypts stored connections' credentials, "
        "every one decrypts (key rotation).",
    )
    oauth_allow_custom_root: bool = Field(
        False,
        description="Accept `oauth_root` (another origin for the vendor's authorize/token endpoints, which "
        "receives the app's client secret) in `connections connect` and the API: only for sandboxes "
        "(`ledgerflow up` turns it on).",
    )
    public_url: str | None = Field(
        None,
        description="Public base URL of the audit service's API as browsers and vendors reach it (behind a "
        "proxy or Ingress: `https://ledgerflow.example.com`, a path prefix kept); the default OAuth redirect URI "
        "of `POST /v1/stored-connections/connect` is `<public_url>/oauth/callback`. Unset: the URL the "
        "request came in on.",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
    )
    kafka_fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        description="Longest a consumer's fetch waits for data. Kafka answers as soon as data arrives, "
        "so this only paces idle polling there; brokers without that wake-up (the embedded Tansu) hold "
        "every fetch this long, which adds up to it per pipeline stage (500 ms, the Kafka default, "
        "measured as a 0.5 s end-to-end median at 100 events/s).",
    )
    state_pool_size: int = Field(
        10, ge=1, description="State-store connections a process keeps open (PostgreSQL; SQLite ignores it)."
    )
    state_max_overflow: int = Field(
        20, ge=0, description="Extra state-store connections a process may open at peaks (closed when returned)."
    )
    ingress_host: str = "0.0.0.0"  # noqa: S104 - a container listens on all interfaces
    ingress_port: int = 8080
    ingress_max_body_bytes: int = Field(1_048_576, ge=1, description="Largest webhook body accepted (413 above).")
    ingress_publish_timeout_seconds: float = Field(
        5.0, gt=0, description="How long the ingress waits for the broker's ack before answering 503."
    )
    ingress_outbox: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Write each accepted webhook to the state store's outbox before answering 202 and re-drive "
        "what has no final result: `auto` = on with the embedded (memory-only) broker, off with real Kafka.",
    )
    outbox_sweep_age_seconds: float = Field(
        300.0, gt=0, description="Seconds after its last send an accepted webhook without a final result is sent again."
    )
    outbox_max_sends: int = Field(4, ge=1, description="Sends of one accepted webhook at most (the first included).")
    outbox_sweep_interval_seconds: float = Field(5.0, gt=0, description="How often the outbox is swept.")
    embedded_broker_check_seconds: float = Field(
        1.0, gt=0, description="How often `ledgerflow up` checks that its embedded broker is alive."
    )
    connections_reload_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a connector fleet (`ledgerflow connector --erp`) checks the stored connections "
        "for added, changed and disabled ones (one cheap query).",
    )
    poller_interval_seconds: float = Field(
        60.0, gt=0, description="Seconds between a poller's rounds over a source's feed (failed rounds back off)."
    )
    metrics_port: int = Field(9100, description="Port of /metrics, /healthz and /readyz for workers.")
    metrics_host: str = Field(
        "0.0.0.0",  # noqa: S104 - in a pod the probes and the scrape come from outside
        description="Interface of the workers' /metrics, /healthz and /readyz server.",
    )
    sandbox_host: str = Field("127.0.0.1", description="Interface `ledgerflow sandbox` listens on.")
    up_state_dir: Path | None = Field(
        None,
        description="Where `ledgerflow up` and `demo` keep their SQLite state (binder, OAuth tokens, audit); "
        "default $XDG_STATE_HOME/ledgerflow or ~/.local/state/ledgerflow.",
    )
    http_max_header_bytes: int = Field(
        32_768, ge=1024, description="Largest request head (request line + headers) any server takes (431 above)."
    )
    http_max_headers: int = Field(100, ge=10, description="Most header fields in one request (431 above).")
    http_request_timeout_seconds: float = Field(
        30.0, gt=0, description="A request must arrive completely within this (408 and the connection closed)."
    )
    http_keep_alive_seconds: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    erp_check_interval_seconds: float = Field(
        300.0,
        ge=0,
        description="How often a connector checks its ERP (credentials, reachability) for ledgerflow_erp_up; "
        "0 = never. Readiness never calls the ERP.",
    )
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log lines as JSON objects, or readable lines; auto: JSON unless stderr is a terminal."
    )
    http_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="Transport of the workers' outbound HTTP client (ledgerflow.core.outbound.transport)."
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Event loop of every service: uvloop when installed (auto), or the stdlib loop."
    )

    @field_validator("state_url")
    @classmethod
    def _async_state_url(cls, value: str) -> str:
        return normalize_state_url(value)

    @cached_property
    def topics(self) -> Topics:
        """Topic names for :attr:`topic_prefix`."""
        return Topics(self.topic_prefix)

    def load_routing(self) -> Routing:
        """The routing file if configured, else :func:`demo_routing`.

        Raises:
            ConfigError: if the configured file is invalid.

        """
        return load_routing(self.routing_file) if self.routing_file else demo_routing()
