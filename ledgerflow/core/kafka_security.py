"""Kafka client security, built one way for every client ledgerflow makes.

Producers, consumers, the FastStream brokers of the workers, topic admin, readiness, the lag
reporter, replay and the benchmarks all take their connection options from
:func:`kafka_client_options`, so a TLS or SASL setting applies everywhere or nowhere.

Supported (``LEDGERFLOW_KAFKA_SECURITY_PROTOCOL`` × ``LEDGERFLOW_KAFKA_SASL_MECHANISM``):

================  ===========================================================================
protocol          what it needs
================  ===========================================================================
``PLAINTEXT``     nothing; any TLS or SASL setting given with it is an error (it would be ignored)
``SSL``           optional ``KAFKA_SSL_CAFILE`` (else the system CAs); ``KAFKA_SSL_CERTFILE`` and
                  ``KAFKA_SSL_KEYFILE`` together for mutual TLS (``KAFKA_SSL_KEY_PASSWORD`` if the
                  key is encrypted); ``KAFKA_SSL_CHECK_HOSTNAME`` (default on)
``SASL_SSL``      the TLS settings above plus a mechanism
``SASL_PLAINTEXT`` a mechanism; no TLS settings
================  ===========================================================================

================  ===========================================================================
mechanism         what it needs
================  ===========================================================================
``PLAIN``         ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``
``SCRAM-SHA-256``  same
``SCRAM-SHA-512``  same
``OAUTHBEARER``   ``KAFKA_OAUTH_TOKEN_URL``, ``KAFKA_OAUTH_CLIENT_ID``, ``KAFKA_OAUTH_CLIENT_SECRET``,
                  optional ``KAFKA_OAUTH_SCOPE``: an OIDC client-credentials grant (RFC 6749 §4.4),
                  the token refreshed before it expires
``AWS_MSK_IAM``   ``KAFKA_AWS_REGION``; credentials from the standard AWS chain (IRSA, env, profile):
                  the ``aws-msk-iam-sasl-signer-python`` token sent over SASL/OAUTHBEARER (MSK's
                  documented way for non-Java clients); requires ``SASL_SSL``
================  ===========================================================================

An unknown or incomplete combination raises :class:`~ledgerflow.core.settings.ConfigError` naming
the setting; nothing falls back to another mechanism.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from ledgerflow.core.settings import ConfigError

if TYPE_CHECKING:
    from ledgerflow.core.settings import Settings

__all__ = ["MskIamTokenProvider", "OidcTokenProvider", "kafka_client_options"]

_PASSWORD_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
MECHANISMS = (*sorted(_PASSWORD_MECHANISMS), "OAUTHBEARER", "AWS_MSK_IAM")
"""Every SASL mechanism ledgerflow can configure (``LEDGERFLOW_KAFKA_SASL_MECHANISM``)."""

_REFRESH_MARGIN_SECONDS = 60.0


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc] # aiokafka ships no type hints
    """SASL/OAUTHBEARER tokens from an OIDC token endpoint (client-credentials grant).

    Args:
        token_url: the identity provider's token endpoint (``https://…/token``).
        client_id: the client id registered for ledgerflow.
        client_secret: its secret.
        scope: space-separated scopes, when the provider needs them.
        timeout: seconds one token request may take.
        transport: the HTTP transport (tests pass ``httpx.MockTransport``); the default otherwise.

    :meth:`token` reuses a token until ``_REFRESH_MARGIN_SECONDS`` (60 s) before its
    ``expires_in``; concurrent callers share one request.

    Raises (from :meth:`token`):
        ConfigError: the endpoint refused the client (4xx) or answered without ``access_token``.
        httpx.HTTPError: the endpoint could not be reached (the Kafka client retries the connection).
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.timeout = timeout
        self._transport = transport
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid access token (cached until shortly before it expires)."""
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            form = {"grant_type": "client_credentials"}
            if self.scope:
                form["scope"] = self.scope
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as client:
                response = await client.post(self.token_url, data=form, auth=(self.client_id, self._client_secret))
            if response.status_code >= 400:
                raise ConfigError(
                    f"LEDGERFLOW_KAFKA_OAUTH_TOKEN_URL: {self.token_url} refused client {self.client_id!r} "
                    f"(HTTP {response.status_code})"
                )
            body = response.json()
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise ConfigError(f"LEDGERFLOW_KAFKA_OAUTH_TOKEN_URL: {self.token_url} answered without access_token")
            expires_in = body.get("expires_in", 300)
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
            self._token = token
            self._expires_at = time.monotonic() + max(lifetime - _REFRESH_MARGIN_SECONDS, lifetime / 2)
            return token


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc] # aiokafka ships no type hints
    """SASL/OAUTHBEARER tokens for Amazon MSK IAM (``aws-msk-iam-sasl-signer-python``).

    Args:
        region: the AWS region of the cluster (``eu-west-1``).

    The signer reads credentials from the standard AWS chain and is synchronous (botocore), so
    it runs in a thread; its token is reused until a minute before the expiry it returns (ms).

    Raises:
        ConfigError: at construction, when ``aws-msk-iam-sasl-signer-python`` is not installed.
    """

    def __init__(self, region: str) -> None:
        try:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ConfigError(
                "LEDGERFLOW_KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs aws-msk-iam-sasl-signer-python: "
                "pip install 'ledgerflow[msk]'"
            ) from exc
        self.region = region
        self._signer = MSKAuthTokenProvider
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid MSK IAM auth token."""
        async with self._lock:
            if self._token is None or time.time() >= self._expires_at:
                token, expiry_ms = await asyncio.to_thread(self._signer.generate_auth_token, self.region)
                self._token = str(token)
                self._expires_at = float(expiry_ms) / 1000 - _REFRESH_MARGIN_SECONDS
            return self._token


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    certfile, keyfile = settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile
    if (certfile is None) != (keyfile is None):
        missing = "LEDGERFLOW_KAFKA_SSL_KEYFILE" if keyfile is None else "LEDGERFLOW_KAFKA_SSL_CERTFILE"
        raise ConfigError(f"{missing} is required for mutual TLS (the certificate and its key go together)")
    for name, path in (
        ("LEDGERFLOW_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
        ("LEDGERFLOW_KAFKA_SSL_CERTFILE", certfile),
        ("LEDGERFLOW_KAFKA_SSL_KEYFILE", keyfile),
    ):
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: {path} is not a readable file")
    password = settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=certfile, keyfile=keyfile, password=password
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"LEDGERFLOW_KAFKA_SSL_*: cannot load the TLS files: {exc}") from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    if not settings.kafka_ssl_check_hostname:
        context.verify_mode = ssl.CERT_REQUIRED  # the chain is still verified, only the name is not
    return context


def _sasl_options(settings: Settings) -> dict[str, Any]:
    mechanism = settings.kafka_sasl_mechanism
    if mechanism is None:
        raise ConfigError(
            f"LEDGERFLOW_KAFKA_SASL_MECHANISM is required with {settings.kafka_security_protocol} "
            f"(one of {', '.join(MECHANISMS)})"
        )
    if mechanism in _PASSWORD_MECHANISMS:
        if not settings.kafka_sasl_username:
            raise ConfigError(f"LEDGERFLOW_KAFKA_SASL_USERNAME is required for SASL {mechanism}")
        if settings.kafka_sasl_password is None:
            raise ConfigError(f"LEDGERFLOW_KAFKA_SASL_PASSWORD is required for SASL {mechanism}")
        return {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    if mechanism == "OAUTHBEARER":
        url, client_id, secret = (
            settings.kafka_oauth_token_url,
            settings.kafka_oauth_client_id,
            settings.kafka_oauth_client_secret,
        )
        needs = "is required for SASL OAUTHBEARER (OIDC client credentials)"
        if not url:
            raise ConfigError(f"LEDGERFLOW_KAFKA_OAUTH_TOKEN_URL {needs}")
        if not client_id:
            raise ConfigError(f"LEDGERFLOW_KAFKA_OAUTH_CLIENT_ID {needs}")
        if secret is None:
            raise ConfigError(f"LEDGERFLOW_KAFKA_OAUTH_CLIENT_SECRET {needs}")
        provider = OidcTokenProvider(url, client_id, secret.get_secret_value(), scope=settings.kafka_oauth_scope)
        return {"sasl_mechanism": "OAUTHBEARER", "sasl_oauth_token_provider": provider}
    # AWS_MSK_IAM
    if settings.kafka_security_protocol != "SASL_SSL":
        raise ConfigError(
            "LEDGERFLOW_KAFKA_SASL_MECHANISM=AWS_MSK_IAM requires LEDGERFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
        )
    if not settings.kafka_aws_region:
        raise ConfigError("LEDGERFLOW_KAFKA_AWS_REGION is required for SASL AWS_MSK_IAM")
    return {
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": MskIamTokenProvider(settings.kafka_aws_region),
    }


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Aiokafka connection keyword arguments (``security_protocol``, ``ssl_context``, ``sasl_*``).

    Pass them to ``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``AIOKafkaAdminClient`` and
    FastStream's ``KafkaBroker`` alike. PLAINTEXT gives ``{"security_protocol": "PLAINTEXT"}``.

    Raises:
        ConfigError: an incomplete or contradictory combination (the message names the setting),
            or a TLS file that cannot be read.

    """
    protocol = settings.kafka_security_protocol
    tls_settings = {
        "LEDGERFLOW_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "LEDGERFLOW_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "LEDGERFLOW_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    options: dict[str, Any] = {"security_protocol": protocol}
    if not protocol.endswith("SSL"):
        stray = [name for name, value in tls_settings.items() if value is not None]
        if stray:
            raise ConfigError(f"{stray[0]} is set but LEDGERFLOW_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS")
    else:
        options["ssl_context"] = _ssl_context(settings)
    if protocol.startswith("SASL"):
        options.update(_sasl_options(settings))
    elif settings.kafka_sasl_mechanism is not None:
        raise ConfigError(
            f"LEDGERFLOW_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism} needs "
            "LEDGERFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT"
        )
    return options
