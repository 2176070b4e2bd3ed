"""What every activity shares: error classification and heartbeating waits.

An activity lets backend errors propagate through :func:`classified`, which
turns them into Temporal ``ApplicationError``s. Each error class declares its
own retry class (:class:`~engine.domain.errors.Retry`, its ``retry``
attribute): retryable when something was unreachable (a cluster's API server,
an exec that timed out), not retryable when the request can never succeed as
asked (an unknown cluster, a rule broken, a failed upgrade, another operation
of the same kind still running on the cluster), and a timed-out wait is left
to the workflow. An error that is none of meshfleet's is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.domain.errors import MeshfleetError, Retry, UnavailableError

T = TypeVar("T")


class WaitTimedOut(MeshfleetError):
    """A wait for a condition ran past its deadline."""

    retry = Retry.TIMED_OUT


def to_application_error(error: BaseException) -> ApplicationError:
    """Map an error to an ApplicationError of the retry class its own class declares."""
    if isinstance(error, ApplicationError):
        return error
    if isinstance(error, MeshfleetError):
        return ApplicationError(
            str(error), type=error.retry.value, non_retryable=not error.retry.retryable
        )
    return ApplicationError(f"{type(error).__name__}: {error}", type=Retry.RETRYABLE.value)


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
        activity.heartbeat(last_problem or "waiting")
        if loop.time() >= deadline:
            suffix = f" (last problem: {last_problem})" if last_problem else ""
            raise WaitTimedOut(
                f"timed out after {timeout.total_seconds():.0f}s waiting for {describe()}{suffix}"
            )
        await asyncio.sleep(interval.total_seconds())
