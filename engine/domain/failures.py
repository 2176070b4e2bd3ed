"""How a failure chain becomes the sentence a person reads (one rule for every layer).

Workflows, activities and the client all show failures that crossed Temporal:
an activity's error inside an ``ActivityError``, a child's inside a
``ChildWorkflowError``, an update's rejection inside a
``WorkflowUpdateFailedError``. The wrappers say only *that* something failed;
the sentence a person needs is what the activity, child or validator said.
"""

from __future__ import annotations

import re

from temporalio.exceptions import ApplicationError

__all__ = ["failure_text", "say_code_once"]

#: ``code: code: text`` — a rule's code said again by each layer the error crossed.
_REPEATED_CODE = re.compile(r"^(?P<code>[A-Za-z][A-Za-z0-9]*): (?:(?P=code): )+")


def say_code_once(text: str) -> str:
    """``singleNetwork: singleNetwork: ...`` -> ``singleNetwork: ...`` (the code said once)."""
    return _REPEATED_CODE.sub(lambda match: f"{match.group('code')}: ", text)


def failure_text(error: BaseException) -> str:
    """What the failure says to a person, its rule code said once.

    Follows the chain of causes inward: the first ``ApplicationError`` met is
    what our own code said (an activity, a child workflow, an update's
    validator), so its message is the answer; a chain with none (a timeout, a
    cancellation, a server error) reads as its innermost error, the one that
    names what happened rather than the layer it crossed.
    """
    cause = error
    while not isinstance(cause, ApplicationError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return say_code_once(cause.message if isinstance(cause, ApplicationError) else str(cause))
