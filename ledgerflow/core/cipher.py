"""Fernet encryption of secrets kept in the state store: connections' credentials, OAuth tokens, pending consents.

The key is ``LEDGERFLOW_CONNECTIONS_KEY`` or the file ``LEDGERFLOW_CONNECTIONS_KEY_FILE`` (a mounted
Kubernetes Secret), one key per line: the first encrypts, every one decrypts (rotation: put the new
key first, rewrite what is stored, then drop the old key). Fernet (``cryptography``) is AES-128-CBC
with an HMAC-SHA256 over the whole token: an altered value fails to decrypt, it is never misread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ledgerflow.core.settings import ConfigError, Settings

__all__ = ["SEALED_PREFIX", "ConnectionCipher"]

SEALED_PREFIX = "fernet:"
"""Prefix of a text column value that :meth:`ConnectionCipher.seal` encrypted (others are legacy plaintext)."""


class ConnectionCipher:
    """Encrypts and decrypts secrets with Fernet keys (first key encrypts, all decrypt).

    Args:
        keys: url-safe base64 Fernet keys (``Fernet.generate_key()``); empty = no key configured.

    Raises:
        ConfigError: a key is not a valid Fernet key (32 url-safe base64-encoded bytes).
    """

    def __init__(self, keys: Sequence[str]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys]) if keys else None
        except ValueError as exc:
            raise ConfigError(
                "LEDGERFLOW_CONNECTIONS_KEY is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionCipher:
        """The keys of ``LEDGERFLOW_CONNECTIONS_KEY`` then each line of ``LEDGERFLOW_CONNECTIONS_KEY_FILE``.

        Raises:
            ConfigError: the key file cannot be read, or a key is invalid.
        """
        keys = [settings.connections_key.get_secret_value()] if settings.connections_key else []
        if settings.connections_key_file is not None:
            keys += _read_keys(settings.connections_key_file)
        return cls(keys)

    @property
    def configured(self) -> bool:
        """Whether at least one key is configured."""
        return self._fernet is not None

    def _require(self, name: str) -> MultiFernet:
        if self._fernet is None:
            raise ConfigError(
                f"connection {name!r} has credentials, which are stored encrypted: set LEDGERFLOW_CONNECTIONS_KEY "
                "or LEDGERFLOW_CONNECTIONS_KEY_FILE (a Fernet key, e.g. from a mounted Secret)"
            )
        return self._fernet

    def encrypt(self, name: str, credentials: Mapping[str, str]) -> str | None:
        """The Fernet token of ``credentials`` (a JSON object), None when there are none.

        Raises:
            ConfigError: credentials are given and no key is configured.
        """
        if not credentials:
            return None
        return self._require(name).encrypt(orjson.dumps(dict(credentials))).decode()

    def decrypt(self, name: str, token: str | None) -> dict[str, str]:
        """The credentials in ``token`` (empty when None).

        Raises:
            ConfigError: no key is configured, or none of the keys decrypts the token (wrong key,
                or the column was altered).
        """
        if token is None:
            return {}
        credentials: dict[str, str] = orjson.loads(self._open(name, token))
        return credentials

    def _open(self, name: str, token: str) -> bytes:
        try:
            return self._require(name).decrypt(token.encode())
        except InvalidToken:
            raise ConfigError(
                f"the secrets of connection {name!r} cannot be decrypted with the configured "
                "LEDGERFLOW_CONNECTIONS_KEY / LEDGERFLOW_CONNECTIONS_KEY_FILE (wrong key, or a key removed too early)"
            ) from None

    def seal(self, name: str, value: str) -> str:
        """``value`` encrypted, as ``fernet:<token>`` (:data:`SEALED_PREFIX`).

        Raises:
            ConfigError: no key is configured.
        """
        return SEALED_PREFIX + self._require(name).encrypt(value.encode()).decode()

    def unseal(self, name: str, stored: str) -> str:
        """The plaintext of a :meth:`seal` ed value; a value without the prefix is returned as it is (legacy).

        Raises:
            ConfigError: a sealed value and no key, or no key decrypts it.
        """
        if not stored.startswith(SEALED_PREFIX):
            return stored
        return self._open(name, stored.removeprefix(SEALED_PREFIX)).decode()


def _read_keys(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read LEDGERFLOW_CONNECTIONS_KEY_FILE {path}: {exc.strerror}") from exc
    return [line.strip() for line in lines if line.strip()]
