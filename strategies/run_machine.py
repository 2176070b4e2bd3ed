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
from collections.abc import Callable, Collection, Mapping, Sequence

from engine.domain.member import Member
from engine.domain.plan import VersionPair
from engine.domain.run import (
    ApproveRequest,
    GateState,
    GateStatus,
    GroupStatus,
    MemberOutcome,
    MemberStatus,
    RunStatus,
    SkipTarget,
    SkipTargetType,
    StageStatus,
    State,
)
from engine.domain.schedule import FleetWindow
from engine.domain.versions import Version
from engine.domain.windows import MaintenanceWindow
from strategies.fleet_windows import fleet_window_next_opening, fleet_window_open
from strategies.progress import MemberVersions, skew_blocker
from strategies.windows import is_open, member_order_key, next_opening

__all__ = [
    "InFlight",
    "approve",
    "budget_exceeded",
    "counted_failures",
    "find_gate",
    "give_up",
    "halt_unfinished",
    "launch_order",
    "may_launch",
    "member_finished",
    "order_key",
    "pick",
    "reconcile_membership",
    "reopen",
    "settle",
    "skip",
    "stop",
    "validate_approve",
    "validate_resume",
    "validate_retry",
    "validate_skip",
    "validate_stop",
]

#: Member name -> (stage, group) of every member whose update runs now.
InFlight = Mapping[str, tuple[str, str]]

#: States a waiting member can be in (nothing of it runs, it may still start).
WAITING = (State.NOT_STARTED, State.PENDING)


# --- order -------------------------------------------------------------------------------


#: The order of a group's members (the planner sorts by the same function).
order_key = member_order_key


def launch_order(
    waiting: Sequence[MemberStatus],
    windows: Mapping[str, MaintenanceWindow | None],
    now: dt.datetime,
) -> list[MemberStatus]:
    """``waiting`` in the order the scheduler tries them (the planner's order, now)."""
    return sorted(waiting, key=lambda m: order_key(windows.get(m.name), m.name, now))


def counted_failures(members: Sequence[MemberStatus], excused: Collection[str] = ()) -> int:
    """Failed members that count against a budget (a retry excuses those it left failed)."""
    return sum(1 for m in members if m.state is State.FAILED and m.name not in excused)


def budget_exceeded(
    stage: StageStatus, group: GroupStatus, excused: Collection[str] = ()
) -> str | None:
    """Why this failure cannot be absorbed (the run fails), or None while budgets hold.

    The cascade (``reference/fleet-update-runs.md``): a group whose failures exceed its
    ``maxAllowedFailures`` fails, and a failed group fails its stage; a stage also fails
    when its groups' failures together exceed the stage's budget; a failed stage fails
    the run. Nothing above a stage absorbs a failure, so either test dooms the run.
    """
    group_failures = counted_failures(group.members, excused)
    if group_failures > group.max_allowed_failures:
        return over_budget("group", group.name, group_failures, group.max_allowed_failures)
    stage_failures = counted_failures([m for g in stage.groups for m in g.members], excused)
    if stage_failures > stage.max_allowed_failures:
        return over_budget("stage", stage.name, stage_failures, stage.max_allowed_failures)
    return None


def over_budget(kind: str, name: str, failed: int, allowed: int) -> str:
    """The text naming which budget was exceeded (a group's or a stage's), and by how much."""
    return f"{kind} {name} exceeded its failure budget ({failed} failed, {allowed} allowed)"


def stage_failure(stage: StageStatus, excused: Collection[str] = ()) -> str | None:
    """Why a stage whose groups have all ended failed on failures, or None if it did not.

    Names the groups over their own budget when any is; else the stage's own budget
    when the groups' failures together exceed it.
    """
    groups = [
        over_budget("group", g.name, counted_failures(g.members, excused), g.max_allowed_failures)
        for g in stage.groups
        if g.state is State.FAILED
    ]
    if groups:
        return "; ".join(groups)
    failed = counted_failures([m for g in stage.groups for m in g.members], excused)
    if failed > stage.max_allowed_failures:
        return over_budget("stage", stage.name, failed, stage.max_allowed_failures)
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


# --- approve -----------------------------------------------------------------------------


def find_gate(status: RunStatus, name: str) -> GateStatus | None:
    """A gate by id, or by display name when exactly one gate has it."""
    gates = status.gates()
    exact = next((g for g in gates if g.id == name), None)
    if exact is not None:
        return exact
    named = [g for g in gates if g.display_name == name]
    return named[0] if len(named) == 1 else None


def validate_approve(status: RunStatus, gate_name: str) -> GateStatus:
    """The waiting gate ``gate_name`` names (else ValueError saying why not)."""
    gate = find_gate(status, gate_name)
    if gate is None:
        known = ", ".join(g.id for g in status.gates()) or "none"
        raise ValueError(f"gate: no gate {gate_name!r} in this run (gates: {known})")
    if gate.state is not GateState.PENDING:
        raise ValueError(
            f"gate: {gate.id} is {gate.state.value}, not Pending; "
            "only a waiting gate can be approved"
        )
    return gate


def approve(status: RunStatus, request: ApproveRequest, now: dt.datetime) -> GateStatus:
    """Open a waiting gate; recorded on the gate with who and the comment."""
    gate = validate_approve(status, request.gate)
    gate.state = GateState.COMPLETED
    gate.completed_at = now
    gate.completed_by = request.identity
    gate.comment = request.comment
    return gate


# --- stop and resume ---------------------------------------------------------------------


def validate_stop(status: RunStatus, reason: str | None) -> None:
    """Only a run that may still start something can be stopped, and only with a reason."""
    if status.state not in (State.RUNNING, State.PENDING, State.NOT_STARTED):
        raise ValueError(
            f"stop: the run is {status.state.value}; only a running run can be stopped"
        )
    if not (reason or "").strip():
        raise ValueError("reason: say why the run is stopped (it is recorded)")


def stop(status: RunStatus) -> None:
    """Nothing new starts; what is in flight finishes; the run is Stopping until then."""
    if status.state in (State.RUNNING, State.PENDING):
        status.state = State.STOPPING


def validate_resume(status: RunStatus) -> None:
    """Only a Stopped or Failed run (or one still Stopping) can be resumed."""
    if status.state not in (State.STOPPED, State.FAILED, State.STOPPING):
        raise ValueError(
            f"resume: the run is {status.state.value}; only a Stopped or Failed run can be resumed"
        )


# --- skip --------------------------------------------------------------------------------

#: What a stage or group may be in to be skipped.
SKIPPABLE = (State.NOT_STARTED, State.PENDING, State.FAILED, State.RUNNING)
#: What a member may be in to be skipped.
MEMBER_SKIPPABLE = (State.NOT_STARTED, State.PENDING, State.FAILED)


def validate_skip(status: RunStatus, targets: Sequence[SkipTarget]) -> None:
    """Every target exists and is in a state that can be skipped (else one ValueError)."""
    problems = []
    for index, target in enumerate(targets):
        path = f"targets[{index}]"
        if target.type is SkipTargetType.MEMBER:
            member = status.member(target.name)
            if member is None:
                problems.append(f"{path}: no member {target.name!r} in this run")
            elif member.state not in MEMBER_SKIPPABLE:
                problems.append(
                    f"{path}: member {target.name} is {member.state.value}; "
                    "only NotStarted, Pending or Failed members can be skipped"
                )
        elif target.type is SkipTargetType.GROUP:
            group = next(
                (g for s in status.stages for g in s.groups if g.name == target.name), None
            )
            if group is None:
                problems.append(f"{path}: no group {target.name!r} in this run")
            elif group.state not in SKIPPABLE:
                problems.append(f"{path}: group {target.name} is {group.state.value}")
        else:
            stage = next((s for s in status.stages if s.name == target.name), None)
            if stage is None:
                problems.append(f"{path}: no stage {target.name!r} in this run")
            elif target.type is SkipTargetType.STAGE and stage.state not in SKIPPABLE:
                problems.append(f"{path}: stage {target.name} is {stage.state.value}")
            elif target.type is SkipTargetType.AFTER_STAGE_WAIT and (
                stage.after_stage_wait is None or stage.after_stage_wait.state.finished
            ):
                problems.append(f"{path}: stage {target.name} has no after-stage wait to skip")
    if problems:
        raise ValueError("; ".join(problems))


def _skip_gates(gates: Sequence[GateStatus], now: dt.datetime) -> None:
    """A skipped owner's gates no longer wait: none of them can be approved any more."""
    for gate in gates:
        if gate.state in (GateState.NOT_STARTED, GateState.PENDING):
            gate.state = GateState.SKIPPED
            gate.completed_at = now
            gate.message = None


def _skip_member(member: MemberStatus, now: dt.datetime) -> bool:
    if member.state not in MEMBER_SKIPPABLE:
        return False
    member.state = State.SKIPPED
    member.message = "skipped by request"
    member.pending_until = None
    member.completed_time = now
    return True


def _skip_group(group: GroupStatus, now: dt.datetime, release_gates: bool) -> None:
    group.state = State.SKIPPED
    if release_gates:
        _skip_gates(group.before_gates + group.after_gates, now)
    for member in group.members:
        _skip_member(member, now)


def skip(
    status: RunStatus,
    targets: Sequence[SkipTarget],
    now: dt.datetime,
    *,
    release_gates: bool = True,
) -> None:
    """Skip members, groups, stages (with their wait) and after-stage waits.

    Members in flight are not skipped (they finish; the owner is Skipped already, so no
    later member of it starts). A skipped owner's waiting gates become Skipped, so a
    later approval of them is refused (``release_gates=False`` only replays histories
    recorded before that rule).
    """
    validate_skip(status, targets)
    for target in targets:
        for stage in status.stages:
            if target.type is SkipTargetType.STAGE and stage.name == target.name:
                stage.state = State.SKIPPED
                stage.completed_time = now
                if release_gates:
                    _skip_gates(stage.before_gates + stage.after_gates, now)
                if stage.after_stage_wait and not stage.after_stage_wait.state.finished:
                    stage.after_stage_wait.state = State.SKIPPED
                for group in stage.groups:
                    _skip_group(group, now, release_gates)
            if (
                target.type is SkipTargetType.AFTER_STAGE_WAIT
                and stage.name == target.name
                and stage.after_stage_wait
            ):
                stage.after_stage_wait.state = State.SKIPPED
            for group in stage.groups:
                if target.type is SkipTargetType.GROUP and group.name == target.name:
                    _skip_group(group, now, release_gates)
                for member in group.members:
                    if (
                        target.type is SkipTargetType.MEMBER
                        and member.name == target.name
                        and _skip_member(member, now)
                    ):
                        group.failure_count = sum(
                            1 for m in group.members if m.state is State.FAILED
                        )


# --- retry and resume --------------------------------------------------------------------


def validate_retry(status: RunStatus, members: Sequence[str]) -> set[str]:
    """The failed members a retry of ``members`` (empty: all) will start again."""
    if not status.state.finished:
        raise ValueError(f"retry: the run is {status.state.value}; retry once it has finished")
    failed = {m.name for _, _, m in status.members() if m.state is State.FAILED}
    if not failed and status.state is not State.FAILED:
        raise ValueError("retry: nothing in this run has failed")
    unknown = [name for name in members if name not in failed]
    if unknown:
        raise ValueError(
            f"members: {', '.join(unknown)} did not fail (failed: {', '.join(sorted(failed))})"
        )
    return set(members) or failed


def reopen(status: RunStatus, members: Collection[str] | None) -> list[str]:
    """Resume (``None``: every failed member) or retry (these): make them startable again.

    Failed members named become NotStarted; stages and groups Failed, Stopped or
    Stopping, and Completed ones that got a member back, are NotStarted again; Skipped
    is never touched. Returns the members reopened.
    """
    reopened_states = (State.FAILED, State.STOPPED, State.STOPPING)
    reopened: list[str] = []
    for stage in status.stages:
        stage_touched = False
        for group in stage.groups:
            group_touched = False
            for member in group.members:
                if member.state is State.FAILED and (members is None or member.name in members):
                    member.state = State.NOT_STARTED
                    member.message = None
                    reopened.append(member.name)
                    group_touched = True
            group.failure_count = sum(1 for m in group.members if m.state is State.FAILED)
            if group.state in reopened_states or (group_touched and group.state is State.COMPLETED):
                group.state = State.NOT_STARTED
                group.message = None
            stage_touched = stage_touched or group_touched
        if stage.state in reopened_states or (stage_touched and stage.state is State.COMPLETED):
            stage.state = State.NOT_STARTED
            stage.message = None
            wait = stage.after_stage_wait
            if wait is not None and wait.state in (State.FAILED, State.COMPLETED, State.STOPPED):
                if wait.state is not State.STOPPED:
                    wait.served_seconds = 0  # a stopped soak keeps what it served
                wait.state = State.NOT_STARTED
    status.state = State.RUNNING
    status.error = None
    return reopened


# --- the scheduler -----------------------------------------------------------------------


def _pending(member: MemberStatus, until: dt.datetime | None, message: str) -> None:
    member.state = State.PENDING
    member.pending_until = until
    member.message = message


def pick(
    stage: StageStatus,
    group: GroupStatus,
    waiting: Sequence[MemberStatus],
    *,
    in_flight: InFlight,
    windows: Mapping[str, MaintenanceWindow | None],
    fleet_window: FleetWindow | None,
    now: dt.datetime,
    deferred: Mapping[str, int],
    completions: int,
    versions: Callable[[], list[MemberVersions]],
    shared_order: bool = True,
) -> tuple[MemberStatus | None, dt.datetime | None]:
    """The next member of ``group`` to start now, or when to look again.

    Caps first (the group's and the stage's members in flight); then the fleet window;
    then the members in the planner's order (``order_key``): a closed window makes a
    member Pending until it opens, the skew rule makes it Pending until others move, a
    deferred member waits until something completed since its deferral.
    ``shared_order=False`` only replays histories recorded before the shared order.
    """
    in_group = sum(1 for m in group.members if m.name in in_flight)
    in_stage = sum(1 for s, _ in in_flight.values() if s == stage.name)
    if in_group >= group.max_concurrency or in_stage >= stage.max_concurrency:
        return None, None
    if fleet_window is not None and not fleet_window_open(fleet_window, now):
        opens = fleet_window_next_opening(fleet_window, now)
        for member in waiting:
            _pending(
                member,
                opens,
                f"fleet maintenance window closed; next opening {opens.isoformat()}"
                if opens
                else "the fleet maintenance window never opens again",
            )
        return None, opens
    if shared_order:
        ordered = launch_order(waiting, windows, now)
    else:
        ordered = sorted(
            waiting,
            key=lambda m: 0 if (w := windows.get(m.name)) is None or is_open(w, now) else 1,
        )
    wake_at: dt.datetime | None = None
    read: list[MemberVersions] | None = None  # read once, when first needed
    for member in ordered:
        if deferred.get(member.name) == completions:
            continue
        window = windows.get(member.name)
        if window is not None and not is_open(window, now):
            opens = next_opening(window, now)
            _pending(
                member,
                opens,
                f"maintenance window closed; next opening {opens.isoformat()}"
                if opens
                else "maintenance window never opens again",
            )
            if opens is not None and (wake_at is None or opens < wake_at):
                wake_at = opens
            continue
        read = read if read is not None else versions()
        blocker = skew_blocker(member.name, read)
        if blocker is not None:
            member.state = State.PENDING
            member.message = blocker
            continue
        return member, None
    return None, wake_at


def give_up(group: GroupStatus, waiting: Sequence[MemberStatus], now: dt.datetime) -> None:
    """Nothing is in flight anywhere and no window will open: what waits can never start."""
    for member in waiting:
        member.state = State.FAILED
        member.message = f"cannot start: {member.message or 'blocked'} (nothing left in flight)"
        member.completed_time = now
        group.failure_count += 1


def may_launch(stage: StageStatus, group: GroupStatus) -> bool:
    """Whether the owners still let a member of ``group`` start (neither is Skipped)."""
    return stage.state is not State.SKIPPED and group.state is not State.SKIPPED


def member_finished(
    group: GroupStatus, member: MemberStatus, outcome: MemberOutcome, now: dt.datetime
) -> bool:
    """Record how a member's update ended; False when it was deferred (it waits again).

    A member skipped by a person while it ran stays Skipped whatever its update says.
    """
    if outcome is MemberOutcome.DEFERRED:
        if member.state is not State.SKIPPED:
            member.state = State.PENDING
        return False
    if member.state is not State.SKIPPED:
        member.state = {
            MemberOutcome.COMPLETED: State.COMPLETED,
            MemberOutcome.SKIPPED: State.SKIPPED,
            MemberOutcome.FAILED: State.FAILED,
        }[outcome]
    member.completed_time = now
    if member.state is State.FAILED:
        group.failure_count += 1
    return True


def settle(
    status: RunStatus, *, failed_reason: str | None, stop_requested: bool, now: dt.datetime
) -> None:
    """The run's state once no stage can move any more (nothing is in flight)."""
    status.failure_count = sum(g.failure_count for s in status.stages for g in s.groups)
    failed = [s for s in status.stages if s.state is State.FAILED]
    if failed or failed_reason:
        status.state = State.FAILED
        status.error = failed_reason or failed[0].message
        halt_unfinished(status, f"not started: {status.error}", now)
    elif stop_requested:
        status.state = State.STOPPED
        halt_unfinished(status, "not started: the run was stopped", now)
    elif all(s.state.satisfied for s in status.stages):
        status.state = State.COMPLETED
        status.error = None
    else:
        status.state = State.FAILED
        status.error = "some stages could not start"


# --- membership changed while the run was not holding the network ------------------------


def reconcile_membership(
    status: RunStatus, network_members: Sequence[str], described: Sequence[Member]
) -> tuple[list[str], list[str]]:
    """Bring a reopened run in line with the network as it is now (the plan is kept).

    Members that left the network and have not finished become Skipped with the
    reason; clusters that joined since the plan are only reported
    (``joined_since_plan``), never added; members still waiting start from the
    versions read now (``described``), with the hops they already passed dropped.
    Returns (removed, joined).
    """
    present = set(network_members)
    planned = {m.name for _, _, m in status.members()}
    now_versions = {m.name: m for m in described}
    removed: list[str] = []
    for _, group, member in status.members():
        if member.name not in present:
            if member.state in (*WAITING, State.FAILED):
                member.state = State.SKIPPED
                member.pending_until = None
                member.message = "left the network since the plan was made; not updated"
                removed.append(member.name)
                group.failure_count = sum(1 for m in group.members if m.state is State.FAILED)
            continue
        current = now_versions.get(member.name)
        if current is None or member.state not in WAITING:
            continue
        member.from_ = VersionPair(
            kubernetes_version=current.kubernetes_version,
            cilium_version=current.cilium_version,
        )
        at = Version.parse(current.kubernetes_version).minor_version
        member.hops = [
            hop for hop in member.hops if Version.parse(hop.kubernetes_version).minor_version > at
        ]
    joined = sorted(present - planned)
    status.joined_since_plan = joined
    return removed, joined
