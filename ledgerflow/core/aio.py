"""Running a service's main coroutine on the right event loop.

Every ``ledgerflow`` command runs on uvloop when it is installed (it comes with
``uvicorn[standard]`` on Linux and macOS): about a third less CPU per webhook and per Kafka
record than the stdlib loop, measured with ``python -m bench``. ``LEDGERFLOW_EVENT_LOOP=asyncio``
forces the stdlib loop (debugging, or a platform without uvloop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: Literal["auto", "uvloop", "asyncio"] = "auto") -> T:
    """Run ``main`` to completion on a new event loop and return its result.

    Args:
        main: the coroutine.
        loop: ``auto`` = uvloop when importable, else the stdlib loop; ``uvloop`` requires it;
            ``asyncio`` = the stdlib loop.

    Raises:
        RuntimeError: ``loop="uvloop"`` and uvloop is not installed.
        Exception: whatever ``main`` raises.
    """
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise RuntimeError("LEDGERFLOW_EVENT_LOOP=uvloop but uvloop is not installed") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)
