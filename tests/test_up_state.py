"""`ledgerflow up` keeps its state where the user can see it, owner-only, fresh at start, deleted on request."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ledgerflow.app.cli import _embedded_state, _remove_state, state_dir
from ledgerflow.core.settings import Settings


def test_the_state_directory_is_documented_and_overridable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(Settings()) == tmp_path / "xdg" / "ledgerflow"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir(Settings()) == tmp_path / "home" / ".local" / "state" / "ledgerflow"
    assert state_dir(Settings(up_state_dir=tmp_path / "mine")) == tmp_path / "mine"


def test_up_state_is_fresh_owner_only_and_removed_on_request(tmp_path: Path) -> None:
    settings, path = _embedded_state(Settings(up_state_dir=tmp_path / "state"), "up")
    assert path == tmp_path / "state" / "up.db"
    assert settings.state_url == f"sqlite+aiosqlite:///{path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.write_bytes(b"tokens of the previous run")
    _, again = _embedded_state(Settings(up_state_dir=tmp_path / "state"), "up")
    assert again == path
    assert path.read_bytes() == b"", "a new run starts from an empty state, like the embedded broker and sandboxes"
    Path(f"{path}-journal").write_bytes(b"x")
    _remove_state(path)
    assert list(path.parent.iterdir()) == []


def test_a_configured_state_url_is_left_alone(tmp_path: Path) -> None:
    mine = Settings(state_url=f"sqlite+aiosqlite:///{tmp_path}/mine.db", up_state_dir=tmp_path / "state")
    settings, path = _embedded_state(mine, "up")
    assert (settings, path) == (mine, None)
    assert not (tmp_path / "state").exists()
