"""The one way tests wait for something: poll a condition until it holds.

A test never sleeps to let something happen; it names what it waits for (a
status, an audit entry, an operation's state) and polls for it here. The sleep
between two checks only paces the polling; the condition decides the outcome,
and a condition that never holds fails the test with what it was waiting for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds between two checks: short, since most conditions are cheap reads.
INTERVAL = 0.05


def _failure(what: str | None, check: Callable[[], object], timeout: float, last: object) -> str:
    name = what or getattr(check, "__name__", "the condition")
    return f"timed out after {timeout:g}s waiting for {name}; last value: {last!r}"


async def eventually(
    check: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = INTERVAL,
    what: str | None = None,
) -> T:
    """Call ``check`` (sync or async) until it returns a truthy value, and return that value.

    Raises ``AssertionError`` naming ``what`` (else the check's name) after ``timeout`` seconds.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(_failure(what, check, timeout, value))
        await asyncio.sleep(interval)


def eventually_blocking(
    check: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = INTERVAL,
    what: str | None = None,
) -> T:
    """``eventually`` for synchronous tests (no event loop): the same rule, blocking."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_failure(what, check, timeout, value))
        time.sleep(interval)
