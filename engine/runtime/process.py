"""Leaving the process: the exit code a ``SystemExit`` asks for, and exiting without teardown.

The CLI's entry point and :func:`run_script` (scripts using the client) both
end here. The client itself never exits: it raises or returns, and whoever
runs it decides how the process ends.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn


def exit_code(done: SystemExit) -> int:
    """The code ``sys.exit`` would give the process: an int as is, None 0, anything else 1."""
    code = done.code
    return code if isinstance(code, int) else (0 if code is None else 1)


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter teardown, after the exit handlers and a flush.

    The Temporal client's Rust threads can outlive the event loop and abort a
    short-lived process while CPython finalizes (temporalio/sdk-python#300:
    "PyGILState_Release: thread state must be current"), turning a clean exit
    into SIGABRT. Exit handlers (stopping an embedded server, flushing traces)
    still run.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def run_script(main: Coroutine[Any, Any, object]) -> NoReturn:
    """``asyncio.run(main)`` for scripts, then exit without interpreter teardown.

    Use it instead of ``asyncio.run`` in short programs that use the client: the
    Temporal SDK's native threads can abort a process during CPython's final
    teardown (temporalio/sdk-python#300, "PyGILState_Release: thread state must
    be current"). Exit handlers still run; the exit code is 0, or 1 with the
    error printed when ``main`` raises.
    """
    try:
        asyncio.run(main)
    except SystemExit as done:
        exit_now(exit_code(done))
    except BaseException:
        traceback.print_exc()
        exit_now(1)
    exit_now(0)
