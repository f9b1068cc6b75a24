"""NetSuite Token-Based Authentication: OAuth 1.0a request signing with HMAC-SHA256.

TBA signs every request with the integration's consumer key/secret and the user's token
id/secret, realm = the account id (reference ``erp_apis.md`` §3.3; Oracle help "Token-based
Authentication"). Tokens do not expire, so there is nothing to refresh. The signature itself is
computed by ``oauthlib`` (``SIGNATURE_HMAC_SHA256``); this module only adapts it to
:class:`ledgerflow.core.outbound.client.RequestAuth`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast

import httpx
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_TYPE_AUTH_HEADER, Client
from pydantic import SecretStr

from ledgerflow.connectors.base import PermanentError
from ledgerflow.contracts.errors import ErrorCode

__all__ = ["TBA_CREDENTIALS", "TokenBasedAuth"]

_Method = Literal["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"]

TBA_CREDENTIALS = ("account_id", "consumer_key", "consumer_secret", "token_id", "token_secret")
"""Credential names a TBA connection needs in ``config.credentials``."""


class TokenBasedAuth:
    """Signs requests with an OAuth 1.0a ``Authorization`` header (HMAC-SHA256, realm = account id).

    Args:
        credentials: ``account_id``, ``consumer_key``, ``consumer_secret``, ``token_id``,
            ``token_secret`` (as :class:`~pydantic.SecretStr`).

    Raises:
        PermanentError: ``auth.config`` when a credential is missing.

    """

    def __init__(self, credentials: Mapping[str, SecretStr]) -> None:
        missing = [name for name in TBA_CREDENTIALS if not credentials.get(name)]
        if missing:
            raise PermanentError(ErrorCode.AUTH_CONFIG, f"NetSuite TBA needs credentials {', '.join(missing)}")
        value = {name: credentials[name].get_secret_value() for name in TBA_CREDENTIALS}
        self.realm = value["account_id"].upper().replace("-", "_")
        self._client_args = value

    def _client(self) -> Client:
        # A new Client per request: oauthlib keeps no state, but nonce/timestamp must be fresh.
        return Client(
            self._client_args["consumer_key"],
            client_secret=self._client_args["consumer_secret"],
            resource_owner_key=self._client_args["token_id"],
            resource_owner_secret=self._client_args["token_secret"],
            signature_method=SIGNATURE_HMAC_SHA256,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
            realm=self.realm,
        )

    async def apply(self, request: httpx.Request) -> None:
        """Set the signed ``Authorization: OAuth realm=…, oauth_signature=…`` header on ``request``."""
        method = cast(_Method, request.method.upper())
        _, headers, _ = self._client().sign(str(request.url), http_method=method)
        request.headers["Authorization"] = headers["Authorization"]

    async def invalidate(self) -> None:
        """Nothing to forget: TBA tokens do not expire and each request is signed afresh."""
