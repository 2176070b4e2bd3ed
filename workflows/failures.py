"""How workflows turn a failure chain into the sentence a person reads."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


def failure_reason(error: BaseException) -> str:
    """The innermost ApplicationError's message (what the activity or child said), else str()."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause.message
        cause = cause.__cause__
    return str(error)
