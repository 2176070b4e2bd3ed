"""How workflows turn a failure chain into the sentence a person reads."""

from __future__ import annotations

import re

from temporalio.exceptions import ApplicationError

#: ``code: code: text`` — a rule's code said again by each layer the error crossed.
_REPEATED_CODE = re.compile(r"^(?P<code>[A-Za-z][A-Za-z0-9]*): (?:(?P=code): )+")


def say_code_once(text: str) -> str:
    """``singleNetwork: singleNetwork: ...`` -> ``singleNetwork: ...`` (the code said once)."""
    return _REPEATED_CODE.sub(lambda match: f"{match.group('code')}: ", text)


def failure_reason(error: BaseException) -> str:
    """The innermost ApplicationError's message (what the activity or child said), else str().

    A rule's code repeated by the layers the error crossed is said once.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return say_code_once(cause.message)
        cause = cause.__cause__
    return say_code_once(str(error))
