"""What callers ask of a network workflow, and the rules a request must pass to be accepted.

The rules need no I/O: the network's update validators apply them before a
request reaches history, and the client checks them too. The rules that need
to read the clusters are :mod:`engine.domain.membership`'s.

Pure data and rules: no I/O, no clock, no Temporal.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from engine.domain.membership import member_list_problems
from engine.domain.model import DomainModel
from engine.domain.names import MAX_NETWORK_MEMBERS
from engine.domain.network import (
    MAX_QUEUED_OPERATIONS,
    HolderExecution,
    MembershipChange,
    NetworkState,
)

__all__ = [
    "AcquireRequest",
    "ClearDrainedRequest",
    "DeleteRequest",
    "JoinRequest",
    "OperationRequest",
    "OperatorReleaseRequest",
    "ReleaseRequest",
    "RemoveRequest",
    "ReportLeftDrainedRequest",
    "ServicesRequest",
    "acquire_problem",
    "delete_problem",
    "join_problems",
    "operator_release_problem",
    "queue_problem",
    "remove_problems",
]


class JoinRequest(DomainModel):
    """Join these clusters (in this order)."""

    members: list[str]


class RemoveRequest(DomainModel):
    """Remove these members (one at a time, in this order)."""

    members: list[str]


class DeleteRequest(DomainModel):
    """Delete the network: only an empty one, unless ``force`` removes every member first."""

    force: bool = False


class AcquireRequest(DomainModel):
    """An update run takes the network; membership changes wait until it releases it."""

    run_id: str
    #: The holder's workflow execution (its acquire activity reads them from its own
    #: info). With them the hold is a lease: it ends when that execution closes.
    holder_workflow_id: str | None = None
    holder_run_id: str | None = None

    def execution(self) -> HolderExecution | None:
        """The execution to watch, when the request named one."""
        if self.holder_workflow_id and self.holder_run_id:
            return HolderExecution(workflow_id=self.holder_workflow_id, run_id=self.holder_run_id)
        return None


class ReleaseRequest(DomainModel):
    """The update run gives the network back; queued membership changes then run."""

    run_id: str


class OperatorReleaseRequest(DomainModel):
    """An operator frees a network whose holder is gone (refused while the holder lives)."""

    #: Who asks (``user@host`` by default), recorded in the network's log.
    identity: str = Field(min_length=1, max_length=200)
    #: Why, recorded in the network's log.
    reason: str = Field(min_length=1, max_length=1000)


class ServicesRequest(DomainModel):
    """List the network's global services (nothing to say yet; a model for compatibility)."""


class OperationRequest(DomainModel):
    """Ask for the result of an operation whose caller was handed over (``continued``)."""

    id: str


class ReportLeftDrainedRequest(DomainModel):
    """A run says what its restore left drained on ``member`` (no services: restored since)."""

    run_id: str
    member: str
    services: list[str] = Field(default_factory=list)


class ClearDrainedRequest(DomainModel):
    """An operator says ``member`` is no longer drained (restored by hand, or removed)."""

    member: str = Field(min_length=1, max_length=200)
    #: Who clears it (``user@host`` by default), recorded in the network's log.
    identity: str = Field(min_length=1, max_length=200)
    #: Why, recorded in the network's log.
    reason: str = Field(min_length=1, max_length=1000)


# --- rules that need no I/O (update validators; the client checks them too) --------------


def _deleting_problem(state: NetworkState) -> str | None:
    if state.deleted or state.deleting:
        return f"network {state.name!r} is being deleted"
    return None


def queue_problem(state: NetworkState) -> str | None:
    """Why no further membership operation can be queued now (None: it can)."""
    if len(state.pending) >= MAX_QUEUED_OPERATIONS:
        return (
            f"network {state.name!r} already has {len(state.pending)} queued operations "
            f"(at most {MAX_QUEUED_OPERATIONS}): wait until they have run"
        )
    return None


def join_problems(state: NetworkState, members: Sequence[str]) -> list[str]:
    """Why joining ``members`` must be rejected before it is accepted (empty: accept)."""
    problems = member_list_problems(members)
    deleting = _deleting_problem(state)
    if deleting:
        problems.append(deleting)
    queued = set(state.queued(MembershipChange.JOIN))
    for name in dict.fromkeys(members):
        if state.member(name) is not None:
            problems.append(f"{name!r} is already a member of {state.name!r}")
        elif name in queued:
            problems.append(f"{name!r} is already queued to join {state.name!r}")
    newcomers = [m for m in dict.fromkeys(members) if state.member(m) is None and m not in queued]
    total = len(state.members) + len(queued) + len(newcomers)
    if total > MAX_NETWORK_MEMBERS:
        problems.append(
            f"a network has at most {MAX_NETWORK_MEMBERS} members: {state.name!r} has "
            f"{len(state.members)} (and {len(queued)} queued to join); "
            f"{len(newcomers)} more would make {total}"
        )
    return problems


def remove_problems(state: NetworkState, members: Sequence[str]) -> list[str]:
    """Why removing ``members`` must be rejected before it is accepted (empty: accept)."""
    problems = member_list_problems(members)
    deleting = _deleting_problem(state)
    if deleting:
        problems.append(deleting)
    joining = set(state.queued(MembershipChange.JOIN))
    leaving = set(state.queued(MembershipChange.REMOVE))
    for name in dict.fromkeys(members):
        if state.member(name) is None and name not in joining:
            problems.append(f"{name!r} is not a member of {state.name!r}")
        elif name in leaving:
            problems.append(f"{name!r} is already queued to leave {state.name!r}")
    return problems


def delete_problem(state: NetworkState, force: bool) -> str | None:
    """Why a delete must be rejected before it is accepted (None: accept)."""
    deleting = _deleting_problem(state)
    if deleting:
        return deleting
    joining = state.queued(MembershipChange.JOIN)
    if not force and (state.members or joining):
        count = len(state.members) + len(joining)
        return (
            f"network {state.name!r} has {count} member(s) (joined or queued); "
            "remove them first or delete with force"
        )
    return None


def acquire_problem(state: NetworkState, run_id: str) -> str | None:
    """Why ``run_id`` cannot take the network now (None: it can, or already holds it)."""
    if not run_id:
        return "a run id is required"
    deleting = _deleting_problem(state)
    if deleting:
        return deleting
    if state.holder is not None and state.holder != run_id:
        return f"network {state.name!r} is held by update run {state.holder!r}"
    return None


def operator_release_problem(state: NetworkState) -> str | None:
    """Why an operator's release must be refused before I/O (None: look at the holder)."""
    if state.holder is None:
        return f"network {state.name!r} is not held by any update run"
    return None
