"""``ledgerflow.core.aio.run``: the event loop every service runs on."""

from __future__ import annotations

import asyncio

import pytest

from ledgerflow.core import aio


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_when_installed_and_asyncio_on_request() -> None:
    pytest.importorskip("uvloop")
    assert aio.run(_loop_module(), "auto").startswith("uvloop")
    assert aio.run(_loop_module(), "uvloop").startswith("uvloop")
    assert aio.run(_loop_module(), "asyncio").startswith("asyncio")


def test_the_coroutines_result_and_errors_come_back() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    async def answer() -> int:
        return 42

    assert aio.run(answer()) == 42
    with pytest.raises(ValueError, match="boom"):
        aio.run(fails(), "asyncio")


def test_asking_for_uvloop_without_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    coro = _loop_module()
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        aio.run(coro, "uvloop")
    assert aio.run(_loop_module(), "auto").startswith("asyncio")
