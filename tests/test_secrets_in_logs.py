"""No token or secret at any log level (issue 13): the state store's SQL echo and an OAuth flow at DEBUG."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ledgerflow.core.state import StateStore, StoredToken


async def test_oauth_tokens_are_not_logged_at_debug_by_the_state_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)  # what `LEDGERFLOW_LOG_LEVEL=DEBUG` enables
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        await store.create_all()
        token = StoredToken("access-SECRET-1234", "refresh-SECRET-5678", datetime.now(UTC) + timedelta(hours=1))
        await store.put_token("qbo", token)
        assert await store.get_token("qbo") is not None
    finally:
        await store.close()
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert "oauth_tokens" in caplog.text, "the SQL echo was not captured: the test would prove nothing"
    assert "SECRET" not in caplog.text


async def test_an_oauth_connector_flow_at_debug_logs_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ledgerflow.connectors.registry import connector_class, sandbox_module
    from ledgerflow.core.asgi import serve
    from ledgerflow.core.settings import ConnectionConfig

    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy.engine", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await store.create_all()
    sandbox = sandbox_module("quickbooks")
    try:
        async with serve(sandbox.create_app()) as url, httpx.AsyncClient(timeout=5) as http:
            config = sandbox.sandbox_connection(ConnectionConfig(erp="quickbooks", objects=["bill"]), url)
            connector = connector_class("quickbooks")("qbo", config, http, store)
            await connector.check()
            stored = await store.get_token("qbo")
    finally:
        await store.close()
        for name in ("sqlalchemy.engine", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    assert stored is not None
    secrets = [stored.access_token, stored.refresh_token or ""]
    secrets += [
        v.get_secret_value()
        for k, v in config.credentials.items()
        if ("secret" in k or "token" in k) and not k.endswith("_url")
    ]
    assert len(secrets) >= 3
    assert "oauth_tokens" in caplog.text
    for secret in secrets:
        assert secret not in caplog.text
