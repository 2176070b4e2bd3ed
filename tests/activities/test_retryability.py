"""Which errors Temporal retries: every error class maps to one pinned ApplicationError.

The workflows match on the ApplicationError ``type`` and Temporal on
``non_retryable``; this table pins both for every error class in the tree, so
moving the decision (or adding a class) cannot change what is retried unseen.
"""

from __future__ import annotations

import importlib

import pytest
from temporalio.exceptions import ApplicationError

from activities.common import to_application_error
from engine.domain.errors import MeshfleetError

#: Modules that, between them, define (or import) every error class of the tree.
MODULES = [
    "engine.runtime.worker",
    "engine.runtime.runs",
    "engine.runtime.setup",
    "engine.runtime.devserver",
    "activities.backends.kubernetes",
    "activities.backends.simulated",
]

RETRYABLE = ("MeshfleetRetryable", False)
NON_RETRYABLE = ("MeshfleetNonRetryable", True)
TIMED_OUT = ("MeshfleetTimedOut", True)

#: Error class name -> (ApplicationError type, non_retryable), as they were before
#: retryability moved onto the classes.
PINNED = {
    "MeshfleetError": NON_RETRYABLE,
    "InvalidInputError": NON_RETRYABLE,
    "NotFoundError": NON_RETRYABLE,
    "UnavailableError": RETRYABLE,
    "ClusterUnavailableError": RETRYABLE,
    "OperationConflictError": NON_RETRYABLE,
    "OperationInProgressError": NON_RETRYABLE,
    "NetworkRequestError": NON_RETRYABLE,
    "NetworkExistsError": NON_RETRYABLE,
    "WaitTimedOut": TIMED_OUT,
    "RestoreIncompleteError": NON_RETRYABLE,
    "_StillUnavailable": RETRYABLE,
    "LeftDrainedError": NON_RETRYABLE,
    "ExecFailedError": NON_RETRYABLE,
    "ExecTimedOutError": RETRYABLE,
    "ValuesNotEditableError": NON_RETRYABLE,
    "KubernetesApiError": NON_RETRYABLE,
    "KubernetesAccessError": NON_RETRYABLE,
    "KubernetesConflictError": NON_RETRYABLE,
    "ControlPlaneUpgradeNotPossibleError": NON_RETRYABLE,
    "CiliumUpgradeNotPossibleError": NON_RETRYABLE,
    "WorldNotLoadedError": NON_RETRYABLE,
    "WorldAlreadyLoadedError": NON_RETRYABLE,
    "NamespaceNotReadyError": NON_RETRYABLE,
    "ControlRejectedError": NON_RETRYABLE,
    "RosterMismatchError": NON_RETRYABLE,
    # Not raised by activities (the embedded server's start); an UnavailableError still.
    "ServerExitedWhileStarting": RETRYABLE,
}


def error_classes() -> dict[str, type[MeshfleetError]]:
    """Every MeshfleetError class of the tree (not the tests'), by name."""
    for module in MODULES:
        importlib.import_module(module)
    found: dict[str, type[MeshfleetError]] = {}
    pending: list[type[MeshfleetError]] = [MeshfleetError]
    while pending:
        cls = pending.pop()
        if found.get(cls.__name__) is cls:
            continue  # reached again through a second base
        if not cls.__module__.startswith("tests."):
            assert cls.__name__ not in found, f"two error classes named {cls.__name__}"
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def saying(cls: type[BaseException], message: str) -> BaseException:
    """An instance of ``cls`` whose text is ``message`` (past any constructor's own arguments)."""
    error = cls.__new__(cls)
    BaseException.__init__(error, message)
    return error


def test_every_error_class_of_the_tree_has_a_pinned_retry_class() -> None:
    assert sorted(error_classes()) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_error_class_becomes_its_pinned_application_error(name: str) -> None:
    error = saying(error_classes()[name], "the reason")
    converted = to_application_error(error)
    assert (converted.type, converted.non_retryable) == PINNED[name]
    assert converted.message == "the reason"


@pytest.mark.parametrize("error", [RuntimeError("boom"), ValueError("boom"), OSError("boom")])
def test_an_error_of_no_meshfleet_class_is_retried_and_named_by_its_type(
    error: Exception,
) -> None:
    converted = to_application_error(error)
    assert (converted.type, converted.non_retryable) == RETRYABLE
    assert converted.message == f"{type(error).__name__}: boom"


def test_an_application_error_passes_through_unchanged() -> None:
    error = ApplicationError("already classified", type="Elsewhere", non_retryable=True)
    assert to_application_error(error) is error
