"""The update run's transitions, as a pure state machine over its status tree.

Every decision a run makes about its own states lives here: the controls
(approve, skip, stop, resume, retry) with their validation, the failure-budget
cascade, the scheduler's order among a group's waiting members, deferral and
giving up. The run workflow calls these and only adds what needs Temporal
(timers, activities, child workflows). All the functions are purely
data-manipulative: no Temporal, no I/O, no clock (``now`` is a parameter).

The rules the property tests hold them to: a state never moves backwards
except by ``resume``/``retry`` (which reopen what failed or stopped); ``Skipped``
is never overwritten; a skipped or stopped owner releases its gates; budgets
and caps hold; the plan's order is the run's order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from engine.domain.run import (
    GateState,
    GateStatus,
    GroupStatus,
    MemberStatus,
    RunStatus,
    StageStatus,
    State,
)

__all__ = [
    "budget_exceeded",
    "halt_unfinished",
]


def budget_exceeded(stage: StageStatus, group: GroupStatus) -> str | None:
    """Why this failure cannot be absorbed (the run fails), or None while budgets hold.

    The cascade (``reference/fleet-update-runs.md``): a group whose failures exceed its
    ``maxAllowedFailures`` fails, and a failed group fails its stage; a stage also fails
    when its groups' failures together exceed the stage's budget; a failed stage fails
    the run. Nothing above a stage absorbs a failure, so either test dooms the run.
    """
    group_failures = sum(1 for m in group.members if m.state is State.FAILED)
    if group_failures > group.max_allowed_failures:
        return (
            f"group {group.name}: {group_failures} member(s) failed "
            f"(group budget {group.max_allowed_failures})"
        )
    stage_failures = sum(1 for g in stage.groups for m in g.members if m.state is State.FAILED)
    if stage_failures > stage.max_allowed_failures:
        return (
            f"stage {stage.name}: {stage_failures} member(s) failed "
            f"(stage budget {stage.max_allowed_failures})"
        )
    return None


def _unwait_gates(gates: list[GateStatus]) -> None:
    for gate in gates:
        if gate.state is GateState.PENDING:
            gate.state = GateState.NOT_STARTED
            gate.message = None


def halt_unfinished(
    status: RunStatus, reason: str, now: dt.datetime, in_flight: Collection[str] = ()
) -> None:
    """The run has stopped or failed: nothing left unfinished keeps waiting.

    Stages and groups still Running, Pending or Stopping become Stopped (``resume``
    reopens them) and their waiting gates are no longer waiting (nobody can approve a
    gate of a stopped owner); members waiting (Pending) go back to NotStarted with
    ``reason``; members in ``in_flight`` are left alone (they finish on their own).
    """
    for stage in status.stages:
        _unwait_gates(stage.before_gates + stage.after_gates)
        for group in stage.groups:
            _unwait_gates(group.before_gates + group.after_gates)
            for member in group.members:
                if member.name in in_flight:
                    continue
                if member.state is State.PENDING:
                    _not_started(member, reason)
            if group.state in (State.RUNNING, State.PENDING, State.STOPPING):
                group.state = State.STOPPED
                group.message = reason
        if stage.state in (State.RUNNING, State.PENDING, State.STOPPING):
            stage.state = State.STOPPED
            stage.message = reason
            stage.completed_time = now
        wait = stage.after_stage_wait
        if wait is not None and wait.state is State.RUNNING:
            wait.state = State.STOPPED


def _not_started(member: MemberStatus, reason: str) -> None:
    member.state = State.NOT_STARTED
    member.pending_until = None
    member.message = reason
