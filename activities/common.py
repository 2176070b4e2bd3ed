"""What every activity shares: error classification and heartbeating waits.

Errors are classified here and nowhere else: an activity lets backend errors
propagate through :func:`classified`, which turns them into Temporal
``ApplicationError``s that are retryable (the cluster is unreachable, an
operation is still running) or not (the request can never succeed: unknown
cluster, a rule broken, a failed upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.domain.errors import InvalidInputError, MeshfleetError, NotFoundError, UnavailableError

T = TypeVar("T")

#: Error types a retry cannot fix, by name (the workflow side matches on these).
NON_RETRYABLE = "MeshfleetNonRetryable"
#: Error type of a wait that ran out of time (also non-retryable: the workflow decides).
TIMED_OUT = "MeshfleetTimedOut"
#: Error type of a retryable, transient problem.
RETRYABLE = "MeshfleetRetryable"


class WaitTimedOut(MeshfleetError):
    """A wait for a condition ran past its deadline."""


def to_application_error(error: BaseException) -> ApplicationError:
    """Map one of our errors to an ApplicationError with the right retry class."""
    if isinstance(error, ApplicationError):
        return error
    if isinstance(error, WaitTimedOut):
        return ApplicationError(str(error), type=TIMED_OUT, non_retryable=True)
    if isinstance(error, UnavailableError):
        return ApplicationError(str(error), type=RETRYABLE)
    if isinstance(error, NotFoundError | InvalidInputError | MeshfleetError):
        return ApplicationError(str(error), type=NON_RETRYABLE, non_retryable=True)
    return ApplicationError(f"{type(error).__name__}: {error}", type=RETRYABLE)


@contextlib.asynccontextmanager
async def classified() -> AsyncIterator[None]:
    """Run the body; re-raise anything but cancellation as a classified ApplicationError."""
    try:
        yield
    except (asyncio.CancelledError, ApplicationError):
        raise  # already classified (an ApplicationError must never become its own cause)
    except Exception as error:
        raise to_application_error(error) from error


async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: dt.timedelta,
    interval: dt.timedelta = dt.timedelta(seconds=1),
    describe: Callable[[], str] = lambda: "the condition",
) -> T:
    """Poll ``check`` until it returns something not None, heartbeating on every poll.

    Raises :class:`WaitTimedOut` (``describe()`` says what was awaited) when
    ``timeout`` passes. Transient ``UnavailableError``s count as "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds()
    last_problem: str | None = None
    while True:
        try:
            result = await check()
        except UnavailableError as error:
            result, last_problem = None, str(error)
        if result is not None:
            return result
        if activity.in_activity():
            activity.heartbeat(last_problem or "waiting")
        if loop.time() >= deadline:
            suffix = f" (last problem: {last_problem})" if last_problem else ""
            raise WaitTimedOut(
                f"timed out after {timeout.total_seconds():.0f}s waiting for {describe()}{suffix}"
            )
        await asyncio.sleep(interval.total_seconds())
