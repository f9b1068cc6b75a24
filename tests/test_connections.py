"""ERP connections kept in the state store: CRUD on SQLite and PostgreSQL, credentials encrypted at
rest (Fernet), key errors, the merge with a YAML routing, and the ``ledgerflow connections`` command."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner

from ledgerflow.app.cli import app
from ledgerflow.core.connections import (
    ConnectionCipher,
    ConnectionStore,
    merge_routing,
    stored_routing,
    validate_connection,
)
from ledgerflow.core.settings import ConfigError, ConnectionConfig, Settings, load_routing
from ledgerflow.core.state import StateStore
from tests.databases import fresh_database

SECRET = "rt-very-secret-refresh-token-1234"


def _config(**credentials: str) -> ConnectionConfig:
    return validate_connection(
        "xero-acme",
        erp="xero",
        base_url="https://api.xero.com",
        objects=["bill", "vendor"],
        credentials=credentials,
        options={"create_vendors": True},
    )


@contextlib.asynccontextmanager
async def _state(kind: str, tmp_path: Path) -> AsyncIterator[StateStore]:
    async with contextlib.AsyncExitStack() as stack:
        if kind == "postgres":
            url = await stack.enter_async_context(fresh_database("ledgerflow_conns"))
        else:
            url = f"sqlite+aiosqlite:///{tmp_path}/state.db"
        state = StateStore(url)
        stack.push_async_callback(state.close)
        await state.create_all()
        yield state


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_crud_round_trip_with_credentials_encrypted_at_rest(kind: str, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    async with _state(kind, tmp_path) as state:
        store = ConnectionStore(state, ConnectionCipher([key]))
        await store.add("xero-acme", _config(refresh_token=SECRET, client_id="app-1"), ["acme", "acme"])

        got = await store.get("xero-acme")
        assert got is not None
        assert got.enabled
        assert got.tenants == ["acme"]
        assert got.config.erp == "xero"
        assert got.config.objects == ["bill", "vendor"]
        assert got.config.options == {"create_vendors": True}
        assert {k: v.get_secret_value() for k, v in got.config.credentials.items()} == {
            "refresh_token": SECRET,
            "client_id": "app-1",
        }

        # The raw column is a Fernet token, not the secret; the key decrypts it.
        async with state.engine.connect() as conn:
            raw = (await conn.execute(text("SELECT credentials FROM erp_connections"))).scalar_one()
        assert SECRET not in raw
        assert "app-1" not in raw
        assert json.loads(Fernet(key.encode()).decrypt(raw.encode())) == {"refresh_token": SECRET, "client_id": "app-1"}
        summary = (await store.summaries())[0]
        assert summary["credentials"] == ["client_id", "refresh_token"]
        assert SECRET not in json.dumps(summary)

        with pytest.raises(ConfigError, match="'xero-acme' exists"):
            await store.add("xero-acme", _config(), ["acme"])

        await store.replace("xero-acme", _config(refresh_token="rotated"), ["acme", "beta"])
        got = await store.get("xero-acme")
        assert got is not None
        assert got.tenants == ["acme", "beta"]
        assert got.config.credentials["refresh_token"].get_secret_value() == "rotated"
        assert "client_id" not in got.config.credentials

        assert await store.set_enabled("xero-acme", False)
        assert [c.name for c in await store.all()] == ["xero-acme"]
        assert await store.all(enabled_only=True) == []
        assert not (await store.get("xero-acme")).enabled  # type: ignore[union-attr]

        assert await store.remove("xero-acme")
        assert await store.get("xero-acme") is None
        assert not await store.remove("xero-acme")
        assert not await store.set_enabled("xero-acme", True)
        with pytest.raises(ConfigError, match="no stored connection named 'xero-acme'"):
            await store.replace("xero-acme", _config(), ["acme"])


async def test_wrong_or_missing_key_is_a_clear_configuration_error(tmp_path: Path) -> None:
    async with _state("sqlite", tmp_path) as state:
        await ConnectionStore(state, ConnectionCipher([Fernet.generate_key().decode()])).add(
            "xero-acme", _config(refresh_token=SECRET), ["acme"]
        )
        wrong = ConnectionStore(state, ConnectionCipher([Fernet.generate_key().decode()]))
        with pytest.raises(ConfigError, match="'xero-acme' cannot be decrypted") as caught:
            await wrong.get("xero-acme")
        assert SECRET not in str(caught.value)

        missing = ConnectionStore(state, ConnectionCipher([]))
        with pytest.raises(ConfigError, match="LEDGERFLOW_CONNECTIONS_KEY"):
            await missing.all()
        with pytest.raises(ConfigError, match="LEDGERFLOW_CONNECTIONS_KEY"):
            await missing.add("other", _config(refresh_token=SECRET), ["acme"])
        # A connection without credentials (a sandbox) needs no key.
        await missing.add(
            "sandbox-xero",
            validate_connection(
                "sandbox-xero", erp="xero", base_url=None, objects=["bill"], credentials={}, options={}
            ),
            ["acme"],
        )
        assert (await missing.summaries())[0]["credentials"] == []

    with pytest.raises(ConfigError, match="not a Fernet key"):
        ConnectionCipher(["not-a-key"])


def test_key_file_rotation_first_key_encrypts_every_key_decrypts(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = ConnectionCipher([old]).encrypt("c", {"k": SECRET})
    key_file = tmp_path / "key"
    key_file.write_text(f"{new}\n{old}\n", encoding="utf-8")
    cipher = ConnectionCipher.from_settings(Settings(connections_key_file=key_file))
    assert cipher.decrypt("c", token) == {"k": SECRET}
    rotated = cipher.encrypt("c", {"k": SECRET})
    assert ConnectionCipher([new]).decrypt("c", rotated) == {"k": SECRET}
    with pytest.raises(ConfigError, match="cannot read LEDGERFLOW_CONNECTIONS_KEY_FILE"):
        ConnectionCipher.from_settings(Settings(connections_key_file=tmp_path / "absent"))


def test_stored_connection_is_validated_exactly_as_a_routing_file_entry() -> None:
    with pytest.raises(ConfigError, match="connection 'c' is invalid: objects: unknown object type"):
        validate_connection("c", erp="xero", base_url=None, objects=["cheque"], credentials={}, options={})
    with pytest.raises(ConfigError, match=r"credentials\.k"):
        validate_connection("c", erp="xero", base_url=None, objects=["bill"], credentials={"k": 5}, options={})  # type: ignore[dict-item]


def _yaml_routing(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "acme": {"sources": {"mercoa": {"tokens": ["t"]}}, "connections": ["qbo-main"]},
                    "beta": {"sources": {"mercoa": {"tokens": ["u"]}}},
                },
                "connections": {"qbo-main": {"erp": "quickbooks", "objects": ["bill"]}},
            }
        ),
        encoding="utf-8",
    )
    return path


async def test_merge_with_a_yaml_routing_name_clash_and_disable(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(
        routing_file=_yaml_routing(tmp_path),
        state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db",
        connections_key=SecretStr(key),
    )
    # No state file yet: the YAML routing as it is, and no file created.
    assert await stored_routing(settings, settings.load_routing()) == settings.load_routing()
    assert not (tmp_path / "state.db").exists()

    async with _state("sqlite", tmp_path) as state:
        store = ConnectionStore(state, ConnectionCipher([key]))
        # The table does not exist until a command creates it: nothing to merge either.
        await store.add("xero-acme", _config(refresh_token=SECRET), ["acme", "beta"])

        merged = await stored_routing(settings, settings.load_routing())
        assert set(merged.connections) == {"qbo-main", "xero-acme"}
        assert merged.tenants["acme"].connections == ["qbo-main", "xero-acme"]
        assert merged.tenants["beta"].connections == ["xero-acme"]
        assert merged.tenants_for("xero-acme") == {"acme", "beta"}
        assert merged.connections["xero-acme"].credentials["refresh_token"].get_secret_value() == SECRET
        assert SECRET not in repr(merged)
        assert load_routing(settings.routing_file).tenants["acme"].connections == ["qbo-main"]  # type: ignore[arg-type]

        # The ingress and the transformer decrypt nothing and need no key; a connector needs its own.
        keyless = settings.model_copy(update={"connections_key": None})
        merged = await stored_routing(keyless, settings.load_routing(), decrypt=())
        assert merged.tenants["beta"].connections == ["xero-acme"]
        assert merged.connections["xero-acme"].credentials == {}
        with pytest.raises(ConfigError, match="connection 'xero-acme' has credentials"):
            await stored_routing(keyless, settings.load_routing(), decrypt=["xero-acme"])
        merged = await stored_routing(settings, settings.load_routing(), decrypt=["xero-acme"])
        assert merged.connections["xero-acme"].credentials["refresh_token"].get_secret_value() == SECRET

        await store.add("qbo-main", _config(), ["acme"])
        with pytest.raises(ConfigError, match="'qbo-main' defined both in the routing file and in the state store"):
            await stored_routing(settings, settings.load_routing())
        await store.remove("qbo-main")

        await store.set_enabled("xero-acme", False)
        merged = await stored_routing(settings, settings.load_routing())
        assert set(merged.connections) == {"qbo-main"}
        assert merged.tenants["beta"].connections == []

        await store.set_enabled("xero-acme", True)
        await store.replace("xero-acme", _config(), ["gone"])
        with pytest.raises(ConfigError, match="serves tenant\\(s\\) 'gone'"):
            merge_routing(settings.load_routing(), await store.all())


async def test_a_state_store_without_the_table_merges_nothing(tmp_path: Path) -> None:
    state = StateStore(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await state.engine.dispose()
    async with state.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE other (x INTEGER)"))
    await state.close()
    settings = Settings(state_url=f"sqlite+aiosqlite:///{tmp_path}/state.db")
    assert await stored_routing(settings, settings.load_routing()) == settings.load_routing()


def test_cli_add_list_show_update_disable_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", f"sqlite:///{tmp_path}/state.db")
    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(_yaml_routing(tmp_path)))
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["connections", *args])
        assert result.exit_code == code, result.output
        assert SECRET not in result.output
        return result.output

    run(
        "add",
        "xero-acme",
        "--erp",
        "xero",
        "--tenant",
        "acme",
        "--tenant",
        "beta",
        "--object",
        "bill",
        "--credential",
        f"refresh_token={SECRET}",
        "--credential",
        "client_id=app-1",
        "--option",
        "create_vendors=true",
    )
    listed = json.loads(run("list", "--json"))
    assert [(c["name"], c["erp"], c["tenants"], c["credentials"], c["enabled"]) for c in listed] == [
        ("xero-acme", "xero", ["acme", "beta"], ["client_id", "refresh_token"], True)
    ]
    assert "xero-acme" in run("list")
    shown = json.loads(run("show", "xero-acme"))
    assert shown["options"] == {"create_vendors": True}
    assert shown["base_url"] is None

    assert "unknown ERP kind 'sap-b1'" in run("add", "x", "--erp", "sap-b1", "--tenant", "acme", code=2)
    assert "already defined in the routing file" in run("add", "qbo-main", "--erp", "xero", "--tenant", "acme", code=2)
    assert "'nope' not in the routing" in run("add", "x", "--erp", "xero", "--tenant", "nope", code=2)
    assert "Extra inputs are not permitted" in run(
        "add", "x", "--erp", "xero", "--tenant", "acme", "--credential", f"bogus={SECRET}", code=2
    )
    assert "KEY=VALUE" in run("add", "x", "--erp", "xero", "--tenant", "acme", "--credential", SECRET, code=2)

    run("update", "xero-acme", "--tenant", "acme", "--drop-credential", "client_id", "--base-url", "https://x.test")
    shown = json.loads(run("show", "xero-acme"))
    assert (shown["tenants"], shown["credentials"], shown["base_url"]) == (
        ["acme"],
        ["refresh_token"],
        "https://x.test",
    )

    run("disable", "xero-acme")
    assert json.loads(run("show", "xero-acme"))["enabled"] is False
    run("enable", "xero-acme")
    assert json.loads(run("show", "xero-acme"))["enabled"] is True

    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", Fernet.generate_key().decode())
    assert "cannot be decrypted" in run("update", "xero-acme", "--option", "create_vendors=false", code=2)

    run("remove", "xero-acme")
    assert json.loads(run("list", "--json")) == []
    assert "no stored connection named 'xero-acme'" in run("show", "xero-acme", code=2)
    assert "no stored connection named 'xero-acme'" in run("disable", "xero-acme", code=2)


def test_only_the_connection_s_own_connector_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGERFLOW_STATE_URL", f"sqlite:///{tmp_path}/state.db")
    monkeypatch.setenv("LEDGERFLOW_CONNECTIONS_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("LEDGERFLOW_ROUTING_FILE", str(_yaml_routing(tmp_path)))
    monkeypatch.delenv("LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    runner = CliRunner()
    added = runner.invoke(
        app, ["connections", "add", "xero-acme", "--erp", "xero", "--tenant", "acme", "--credential", f"a={SECRET}"]
    )
    assert added.exit_code == 2, added.output  # Xero takes no credential "a"
    added = runner.invoke(
        app,
        ["connections", "add", "xero-acme", "--erp", "xero", "--tenant", "acme", "--credential", f"tenant_id={SECRET}"],
    )
    assert added.exit_code == 0, added.output
    monkeypatch.delenv("LEDGERFLOW_CONNECTIONS_KEY")

    # The transformer loads the merged routing without the key, then stops at the missing broker.
    transformer = runner.invoke(app, ["transformer"])
    assert transformer.exit_code == 2
    assert "LEDGERFLOW_KAFKA_BOOTSTRAP_SERVERS is not set" in transformer.output
    # The connection's own connector needs the key to book with its credentials.
    connector = runner.invoke(app, ["connector", "--connection", "xero-acme"])
    assert connector.exit_code == 2
    assert "connection 'xero-acme' has credentials" in " ".join(connector.output.split())
    assert SECRET not in transformer.output + connector.output
