"""Kafka client security from settings: every supported combination, and clear errors for the rest.

The embedded broker speaks no SASL, so SASL mechanisms are tested here as the client configuration
ledgerflow builds for each; TLS and mutual TLS run for real in tests/test_kafka_tls.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from faststream.security import BaseSecurity, SASLOAuthBearer, SASLPlaintext, SASLScram256

from ledgerflow.core.kafka import security_from_settings
from ledgerflow.core.kafka_security import MskIamTokenProvider, OidcTokenProvider, kafka_client_options
from ledgerflow.core.settings import ConfigError, Settings

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("client")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    return files


def test_plaintext_has_no_security() -> None:
    assert kafka_client_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert security_from_settings(Settings()) == (None, {})


def test_ssl_with_ca_and_client_certificate(pki: dict[str, Path]) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
    )
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    security, extra = security_from_settings(settings)
    assert isinstance(security, BaseSecurity)
    assert security.use_ssl
    assert extra == {}


def test_hostname_check_can_be_turned_off_but_the_chain_is_still_verified(pki: dict[str, Path]) -> None:
    context = kafka_client_options(
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"], kafka_ssl_check_hostname=False)
    )["ssl_context"]
    assert not context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_password_mechanisms(mechanism: str, protocol: str) -> None:
    settings = Settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="svc-ledgerflow",
        kafka_sasl_password="s3cr3t",
    )
    options = kafka_client_options(settings)
    assert options["security_protocol"] == protocol
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc-ledgerflow", "s3cr3t")
    assert ("ssl_context" in options) is (protocol == "SASL_SSL")
    security, _ = security_from_settings(settings)
    assert security is not None
    assert security.use_ssl is (protocol == "SASL_SSL")
    if mechanism == "PLAIN":
        assert isinstance(security, SASLPlaintext)
    if mechanism == "SCRAM-SHA-256":
        assert isinstance(security, SASLScram256)


def test_oauthbearer_uses_an_oidc_client_credentials_token() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_oauth_token_url="https://idp.example/oauth2/token",
        kafka_oauth_client_id="ledgerflow",
        kafka_oauth_client_secret="cs",
        kafka_oauth_scope="kafka",
    )
    options = kafka_client_options(settings)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, OidcTokenProvider)
    assert (provider.token_url, provider.client_id, provider.scope) == (
        "https://idp.example/oauth2/token",
        "ledgerflow",
        "kafka",
    )
    security, extra = security_from_settings(settings)
    assert isinstance(security, SASLOAuthBearer)
    assert isinstance(extra["sasl_oauth_token_provider"], OidcTokenProvider)


async def test_oidc_token_is_fetched_once_and_reused() -> None:
    calls: list[httpx.Request] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"access_token": f"tok-{len(calls)}", "expires_in": 3600})

    provider = OidcTokenProvider(
        "https://idp.example/token", "id", "secret", scope="kafka", transport=httpx.MockTransport(token_endpoint)
    )
    assert await provider.token() == "tok-1"
    assert await provider.token() == "tok-1"
    assert len(calls) == 1
    form = calls[0].content.decode()
    assert "grant_type=client_credentials" in form
    assert "scope=kafka" in form
    assert calls[0].headers["authorization"].startswith("Basic ")


async def test_oidc_refusal_is_a_configuration_error() -> None:
    provider = OidcTokenProvider(
        "https://idp.example/token", "id", "bad", transport=httpx.MockTransport(lambda _: httpx.Response(401))
    )
    with pytest.raises(ConfigError, match=r"LEDGERFLOW_KAFKA_OAUTH_TOKEN_URL.*refused client 'id'.*401"):
        await provider.token()


def test_aws_msk_iam_signs_with_the_region() -> None:
    pytest.importorskip("aws_msk_iam_sasl_signer", reason="the msk extra is not installed")
    options = kafka_client_options(
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="AWS_MSK_IAM", kafka_aws_region="eu-west-1")
    )
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)
    assert provider.region == "eu-west-1"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "LEDGERFLOW_KAFKA_SASL_MECHANISM is required with SASL_SSL"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"},
            "LEDGERFLOW_KAFKA_SASL_USERNAME is required for SASL PLAIN",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": "u",
            },
            "LEDGERFLOW_KAFKA_SASL_PASSWORD is required for SASL SCRAM-SHA-512",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "LEDGERFLOW_KAFKA_OAUTH_TOKEN_URL is required",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "AWS_MSK_IAM"},
            "AWS_MSK_IAM requires LEDGERFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "AWS_MSK_IAM"},
            "LEDGERFLOW_KAFKA_AWS_REGION is required",
        ),
        ({"kafka_sasl_mechanism": "PLAIN"}, "needs LEDGERFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT"),
        ({"kafka_ssl_cafile": "/etc/ca.pem"}, "LEDGERFLOW_KAFKA_SSL_CAFILE is set but .*=PLAINTEXT uses no TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "LEDGERFLOW_KAFKA_SSL_CAFILE: /nonexistent/ca.pem is not a readable file",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/x/cert.pem"},
            "LEDGERFLOW_KAFKA_SSL_KEYFILE is required for mutual TLS",
        ),
    ],
)
def test_incomplete_or_contradictory_settings_name_the_setting(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kafka_client_options(Settings(**values))  # type: ignore[arg-type]


def test_an_unknown_mechanism_is_rejected_not_turned_into_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LEDGERFLOW_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ValueError, match="kafka_sasl_mechanism"):
        Settings()
