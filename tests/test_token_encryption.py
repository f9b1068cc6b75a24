"""OAuth tokens in the state store: encrypted at rest with the connections key, plaintext rows migrated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.cipher import ConnectionCipher
from ledgerflow.core.outbound.errors import PermanentError
from ledgerflow.core.outbound.oauth import RefreshTokenManager
from ledgerflow.core.settings import ConfigError
from ledgerflow.core.state import StateStore, StoredToken
from tests.databases import fresh_database

ACCESS, REFRESH = "at-plain-access-0123456789", "rt-plain-refresh-0123456789"
LATER = datetime.now(UTC) + timedelta(hours=1)


async def _raw(state: StateStore, connection: str) -> tuple[str, str | None]:
    async with state.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT access_token, refresh_token FROM oauth_tokens WHERE connection = :c"), {"c": connection}
            )
        ).one()
    return row[0], row[1]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_tokens_are_encrypted_and_plaintext_rows_are_migrated(kind: str, tmp_path: Path) -> None:
    if kind == "postgres":
        async with fresh_database("ledgerflow_tokens") as url:
            await _check(url)
    else:
        await _check(f"sqlite+aiosqlite:///{tmp_path}/state.db")


async def _check(url: str) -> None:
    key = Fernet.generate_key().decode()
    # An earlier release (no key): plaintext rows.
    old = StateStore(url)
    await old.create_all()
    await old.put_token("qbo", StoredToken(ACCESS, REFRESH, LATER))
    await old.put_token("xero", StoredToken(ACCESS + "x", REFRESH + "x", LATER))
    assert await _raw(old, "qbo") == (ACCESS, REFRESH)
    await old.close()

    # With the key: reading a plaintext row returns it and rewrites it encrypted.
    new = StateStore(url, cipher=ConnectionCipher([key]))
    try:
        got = await new.get_token("qbo")
        assert got is not None
        assert (got.access_token, got.refresh_token) == (ACCESS, REFRESH)
        access, refresh = await _raw(new, "qbo")
        assert access.startswith("fernet:")
        assert refresh is not None
        assert refresh.startswith("fernet:")
        assert ACCESS not in access
        assert REFRESH not in refresh
        # create_all migrates the rows nobody read yet.
        assert (await _raw(new, "xero"))[0] == ACCESS + "x"
        await new.create_all()
        assert (await _raw(new, "xero"))[0].startswith("fernet:")
        assert await new.encrypt_tokens() == 0  # idempotent
        got = await new.get_token("xero")
        assert got is not None
        assert got.refresh_token == REFRESH + "x"

        # A rotation is written encrypted; None refresh token stays None.
        await new.put_token("qbo", StoredToken("at-2", None, LATER))
        access, refresh = await _raw(new, "qbo")
        assert access.startswith("fernet:")
        assert refresh is None
        got = await new.get_token("qbo")
        assert got is not None
        assert (got.access_token, got.refresh_token) == ("at-2", None)
    finally:
        await new.close()

    # Without the key (or with another one) the encrypted rows cannot be read: a clear error.
    for cipher in (None, ConnectionCipher([Fernet.generate_key().decode()])):
        keyless = StateStore(url, cipher=cipher)
        try:
            with pytest.raises(ConfigError, match="LEDGERFLOW_CONNECTIONS_KEY"):
                await keyless.get_token("qbo")
            # The token manager turns it into a permanent auth.config error, never a crash.
            async with httpx.AsyncClient() as http:
                manager = RefreshTokenManager(
                    http,
                    keyless,
                    "qbo",
                    initial_refresh_token=None,
                    erp="quickbooks",
                    token_url="http://127.0.0.1:9/token",
                    client_id="c",
                    client_secret="s",
                )
                with pytest.raises(PermanentError) as caught:
                    await manager.access_token()
                assert caught.value.code == ErrorCode.AUTH_CONFIG
        finally:
            await keyless.close()
