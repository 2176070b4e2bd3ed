"""The run's pure state machine: each control in each state, and properties over sequences.

No Temporal here: ``strategies.run_machine`` is what the run workflow calls for every
decision about its own states, so its rules are checked exhaustively and fast.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain.plan import VersionPair
from engine.domain.run import (
    ApproveRequest,
    GateKind,
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
from engine.domain.versions import Version
from engine.domain.windows import MaintenanceWindow
from strategies import run_machine as machine
from strategies.progress import MemberVersions

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
OLD = VersionPair(kubernetes_version="1.32.6", cilium_version="1.17.9")
NEW = VersionPair(kubernetes_version="1.33.5", cilium_version="1.18.6")


def member(name: str, state: State = State.NOT_STARTED) -> MemberStatus:
    return MemberStatus.model_validate({"name": name, "state": state, "from": OLD, "to": NEW})


def gate(gate_id: str) -> GateStatus:
    return GateStatus(id=gate_id, display_name=gate_id, kind=GateKind.APPROVAL)


def run_status(group_budget: int = 0, stage_budget: int = 0, concurrency: int = 1) -> RunStatus:
    """Two stages of two groups of three members; an Approval gate before each stage and
    before group ``b``."""
    stages = []
    for stage_name, groups in (("one", ("a", "b")), ("two", ("c", "d"))):
        stages.append(
            StageStatus(
                name=stage_name,
                max_concurrency=4,
                max_allowed_failures=stage_budget,
                before_gates=[gate(f"{stage_name}/before/0")],
                groups=[
                    GroupStatus(
                        name=g,
                        max_concurrency=concurrency,
                        max_allowed_failures=group_budget,
                        before_gates=[gate(f"{stage_name}/{g}/before/0")] if g == "b" else [],
                        members=[member(f"{g}-{i}") for i in (1, 2, 3)],
                    )
                    for g in groups
                ],
            )
        )
    return RunStatus(
        run_id="r", name="r", network="n", state=State.RUNNING, target=NEW, stages=stages
    )


def same_versions(status: RunStatus) -> list[MemberVersions]:
    return [
        MemberVersions(name=m.name, current=m.from_, target=m.to, moving=False)
        for _, _, m in status.members()
    ]


def approve(gate_id: str) -> ApproveRequest:
    return ApproveRequest(gate=gate_id, identity="t@example")


# --- each control in each state ---------------------------------------------------------


def test_skipping_a_stage_waiting_at_its_gate_skips_the_gate_and_a_later_approval_is_refused() -> (
    None
):
    status = run_status()
    stage = status.stages[0]
    stage.state = State.PENDING
    stage.before_gates[0].state = GateState.PENDING
    machine.skip(status, [SkipTarget(type=SkipTargetType.STAGE, name="one")], NOW)
    assert stage.state is State.SKIPPED
    assert all(g.state is GateState.SKIPPED for g in stage.before_gates)
    assert all(g.state is GateState.SKIPPED for grp in stage.groups for g in grp.before_gates)
    with pytest.raises(ValueError, match="one/before/0 is Skipped, not Pending"):
        machine.approve(status, approve("one/before/0"), NOW)


def test_approve_opens_only_a_waiting_gate_and_records_who() -> None:
    status = run_status()
    with pytest.raises(ValueError, match="is NotStarted, not Pending"):
        machine.validate_approve(status, "one/before/0")
    with pytest.raises(ValueError, match="no gate 'nope'"):
        machine.validate_approve(status, "nope")
    status.stages[0].before_gates[0].state = GateState.PENDING
    opened = machine.approve(status, approve("one/before/0"), NOW)
    assert (opened.state, opened.completed_by, opened.completed_at) == (
        GateState.COMPLETED,
        "t@example",
        NOW,
    )


@pytest.mark.parametrize("state", list(State))
def test_stop_is_accepted_only_while_the_run_may_start_something(state: State) -> None:
    status = run_status()
    status.state = state
    if state in (State.RUNNING, State.PENDING, State.NOT_STARTED):
        machine.validate_stop(status, "freeze")
        machine.stop(status)
        assert status.state is (State.NOT_STARTED if state is State.NOT_STARTED else State.STOPPING)
    else:
        with pytest.raises(ValueError, match="only a running run can be stopped"):
            machine.validate_stop(status, "freeze")
    status.state = State.RUNNING
    with pytest.raises(ValueError, match="reason"):
        machine.validate_stop(status, "  ")


@pytest.mark.parametrize("state", list(State))
def test_resume_is_accepted_only_when_stopped_failed_or_stopping(state: State) -> None:
    status = run_status()
    status.state = state
    if state in (State.STOPPED, State.FAILED, State.STOPPING):
        machine.validate_resume(status)
    else:
        with pytest.raises(ValueError, match="only a Stopped or Failed run can be resumed"):
            machine.validate_resume(status)


@pytest.mark.parametrize(
    ("kind", "name", "state", "accepted"),
    [
        (kind, name, state, accepted)
        for (kind, name), state in itertools.product(
            [
                (SkipTargetType.MEMBER, "a-1"),
                (SkipTargetType.GROUP, "a"),
                (SkipTargetType.STAGE, "one"),
            ],
            list(State),
        )
        for accepted in [
            state
            in (machine.MEMBER_SKIPPABLE if kind is SkipTargetType.MEMBER else machine.SKIPPABLE)
        ]
    ],
)
def test_skip_is_accepted_exactly_in_the_skippable_states(
    kind: SkipTargetType, name: str, state: State, accepted: bool
) -> None:
    status = run_status()
    target_owner = {
        SkipTargetType.MEMBER: status.stages[0].groups[0].members[0],
        SkipTargetType.GROUP: status.stages[0].groups[0],
        SkipTargetType.STAGE: status.stages[0],
    }[kind]
    target_owner.state = state
    before = status.model_dump_json()
    target = SkipTarget(type=kind, name=name)
    if accepted:
        machine.skip(status, [target], NOW)
        assert target_owner.state is State.SKIPPED
    else:
        with pytest.raises(ValueError, match=name):
            machine.skip(status, [target], NOW)
        assert status.model_dump_json() == before


def test_a_partial_retry_excuses_the_failures_it_leaves_so_its_member_can_run() -> None:
    status = run_status()
    group = status.stages[0].groups[0]
    for m in group.members[:2]:
        m.state = State.FAILED
    status.state = State.FAILED
    chosen = machine.validate_retry(status, ["a-1"])
    assert chosen == {"a-1"}
    machine.reopen(status, chosen)
    assert group.members[0].state is State.NOT_STARTED
    assert machine.budget_exceeded(status.stages[0], group) is not None
    assert machine.budget_exceeded(status.stages[0], group, excused=["a-2"]) is None


def test_retry_refuses_members_that_did_not_fail_and_a_run_still_running() -> None:
    status = run_status()
    status.stages[0].groups[0].members[0].state = State.FAILED
    with pytest.raises(ValueError, match="retry once it has finished"):
        machine.validate_retry(status, [])
    status.state = State.FAILED
    with pytest.raises(ValueError, match="a-2 did not fail"):
        machine.validate_retry(status, ["a-2"])
    assert machine.validate_retry(status, []) == {"a-1"}


def test_the_budget_cascade_fails_on_the_group_then_on_the_stage() -> None:
    status = run_status(group_budget=1, stage_budget=2)
    one = status.stages[0]
    a, b = one.groups
    a.members[0].state = State.FAILED
    assert machine.budget_exceeded(one, a) is None
    a.members[1].state = State.FAILED
    assert machine.budget_exceeded(one, a) == (
        "group a exceeded its failure budget (2 failed, 1 allowed)"
    )
    a.members[1].state = State.COMPLETED
    b.members[0].state = State.FAILED
    b.members[1].state = State.FAILED
    assert machine.budget_exceeded(one, a) == (
        "stage one exceeded its failure budget (3 failed, 2 allowed)"
    )


def test_the_scheduler_follows_the_planners_order_open_then_soon_then_none_then_closed() -> None:
    status = run_status(concurrency=3)
    stage = status.stages[0]
    group = stage.groups[0]
    group.members = [member("w-closed"), member("w-none"), member("w-soon"), member("w-open")]
    hour = NOW.hour

    def daily(start_hour: int) -> MaintenanceWindow:
        return MaintenanceWindow.model_validate(
            {
                "schedule": {"daily": {"intervalDays": 1}},
                "durationHours": 4,
                "startTime": f"{start_hour % 24:02d}:00",
            }
        )

    windows = {
        "w-open": daily(hour),
        "w-soon": daily(hour + 2),
        "w-none": None,
        "w-closed": daily(hour + 12),
    }
    ordered = machine.launch_order(group.members, windows, NOW)
    assert [m.name for m in ordered] == ["w-open", "w-soon", "w-none", "w-closed"]
    picked = []
    in_flight: dict[str, tuple[str, str]] = {}
    while True:
        waiting = [m for m in group.members if m.state in machine.WAITING]
        chosen, _ = machine.pick(
            stage,
            group,
            waiting,
            in_flight=in_flight,
            windows=windows,
            fleet_window=None,
            now=NOW,
            deferred={},
            completions=0,
            versions=lambda: same_versions(status),
        )
        if chosen is None:
            break
        chosen.state = State.RUNNING
        in_flight[chosen.name] = (stage.name, group.name)
        picked.append(chosen.name)
    # soon and closed are not open now: Pending until their opening; none and open start.
    assert picked == ["w-open", "w-none"]
    assert {m.name: m.state for m in group.members}["w-soon"] is State.PENDING


def test_a_member_given_up_on_can_be_retried_once_its_deferral_is_cleared() -> None:
    status = run_status()
    stage, group = status.stages[0], status.stages[0].groups[0]
    machine.give_up(group, group.members[:1], NOW)
    assert group.members[0].state is State.FAILED
    status.state = State.FAILED
    reopened = machine.reopen(status, {"a-1"})
    assert reopened == ["a-1"]
    deferred = {"a-1": 3}
    chosen, _ = machine.pick(
        stage, group, [group.members[0]], in_flight={}, windows={}, fleet_window=None,
        now=NOW, deferred=deferred, completions=3, versions=lambda: same_versions(status),
    )  # fmt: skip
    assert chosen is None, "still deferred: the workflow clears the deferral on reopen"
    chosen, _ = machine.pick(
        stage, group, [group.members[0]], in_flight={}, windows={}, fleet_window=None,
        now=NOW, deferred={}, completions=3, versions=lambda: same_versions(status),
    )  # fmt: skip
    assert chosen is group.members[0]


def test_a_failed_run_leaves_nothing_running_pending_or_waiting_at_a_gate() -> None:
    status = run_status()
    one, two = status.stages
    one.state = State.FAILED
    two.state = State.PENDING
    two.before_gates[0].state = GateState.PENDING
    two.groups[0].state = State.RUNNING
    two.groups[0].members[0].state = State.PENDING
    machine.settle(status, failed_reason="stage one failed", stop_requested=False, now=NOW)
    assert status.state is State.FAILED
    assert two.state is State.STOPPED
    assert two.before_gates[0].state is GateState.NOT_STARTED
    assert two.groups[0].state is State.STOPPED
    assert two.groups[0].members[0].state is State.NOT_STARTED


# --- properties over random sequences of controls and outcomes --------------------------

RANK = {
    State.NOT_STARTED: 0,
    State.PENDING: 0,
    State.RUNNING: 1,
    State.STOPPING: 1,
    State.STOPPED: 2,
    State.SKIPPED: 2,
    State.FAILED: 2,
    State.COMPLETED: 2,
}


@dataclass
class Driver:
    """Drives the pure machine the way the workflow does, without Temporal."""

    status: RunStatus
    in_flight: dict[str, tuple[str, str]] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)
    launched_at: dict[str, int] = field(default_factory=dict)
    completions: int = 0
    excused: list[str] = field(default_factory=list)
    stop_requested: bool = False
    failed_reason: str | None = None
    launches_after_doom: int = 0

    def halted(self) -> bool:
        return self.stop_requested or self.failed_reason is not None

    def owners(self) -> list[tuple[StageStatus, GroupStatus]]:
        return [(s, g) for s in self.status.stages for g in s.groups]

    def doomed(self) -> bool:
        """Counted here, not by the machine: a failure beyond a group's or stage's budget."""

        def failed(members: list[MemberStatus]) -> int:
            return sum(1 for m in members if m.state is State.FAILED and m.name not in self.excused)

        return any(
            failed(g.members) > g.max_allowed_failures
            or failed([m for grp in s.groups for m in grp.members]) > s.max_allowed_failures
            for s, g in self.owners()
        )

    def launch(self, index: int) -> None:
        stage, group = self.owners()[index % len(self.owners())]
        if self.halted() or self.status.state.finished or not machine.may_launch(stage, group):
            return
        if machine.counted_failures(group.members, self.excused) > group.max_allowed_failures:
            return
        waiting = [m for m in group.members if m.state in machine.WAITING]
        chosen, _ = machine.pick(
            stage, group, waiting, in_flight=self.in_flight, windows={}, fleet_window=None,
            now=NOW, deferred=self.deferred, completions=self.completions,
            versions=lambda: same_versions(self.status),
        )  # fmt: skip
        if chosen is None:
            return
        if self.doomed():
            self.launches_after_doom += 1
        chosen.state = State.RUNNING
        self.in_flight[chosen.name] = (stage.name, group.name)
        self.launched_at[chosen.name] = self.completions
        group.state = State.RUNNING if group.state is State.NOT_STARTED else group.state

    def finish(self, index: int, outcome: MemberOutcome) -> None:
        if not self.in_flight:
            return
        name = sorted(self.in_flight)[index % len(self.in_flight)]
        stage_name, group_name = self.in_flight.pop(name)
        stage = next(s for s in self.status.stages if s.name == stage_name)
        group = next(g for g in stage.groups if g.name == group_name)
        m = next(m for m in group.members if m.name == name)
        if machine.member_finished(group, m, outcome, NOW):
            self.completions += 1
            reason = machine.budget_exceeded(stage, group, self.excused)
            if m.state is State.FAILED and reason and self.failed_reason is None:
                self.failed_reason = reason
        else:
            self.deferred[name] = self.launched_at[name]

    def reach_gate(self, index: int) -> None:
        gates = [
            (owner, g)
            for s in self.status.stages
            for owner, g in [(s, g) for g in s.before_gates]
            + [(grp, g) for grp in s.groups for g in grp.before_gates]
        ]
        owner, g = gates[index % len(gates)]
        if self.halted() or owner.state.finished or g.state is not GateState.NOT_STARTED:
            return
        g.state = GateState.PENDING
        owner.state = State.PENDING

    def settle(self) -> None:
        if self.in_flight or self.status.state.finished:
            return
        if not self.halted():
            return  # a run that is not halted keeps going; settling is for its end
        machine.settle(
            self.status, failed_reason=self.failed_reason,
            stop_requested=self.stop_requested, now=NOW,
        )  # fmt: skip

    def reopen(self, members: list[str] | None) -> None:
        self.stop_requested = False
        self.failed_reason = None
        if members is None:
            self.excused = []
            reopened = machine.reopen(self.status, None)
        else:
            failed = {m.name for _, _, m in self.status.members() if m.state is State.FAILED}
            chosen = set(members) or failed
            if members:
                self.excused = sorted((set(self.excused) | failed) - chosen)
            reopened = machine.reopen(self.status, chosen)
            self.excused = [n for n in self.excused if n not in chosen]
        for name in reopened:
            self.deferred.pop(name, None)

    def apply(self, op: tuple[str, int, int]) -> str:
        """Apply one operation; returns "refused" when a control's validation refused it."""
        kind, x, y = op
        members = [m.name for _, _, m in self.status.members()]
        try:
            if kind == "launch":
                self.launch(x)
            elif kind == "finish":
                self.finish(x, list(MemberOutcome)[y % len(MemberOutcome)])
            elif kind == "gate":
                self.reach_gate(x)
            elif kind == "approve":
                gates = self.status.gates()
                machine.approve(self.status, approve(gates[x % len(gates)].id), NOW)
            elif kind == "skip":
                skip_kind = list(SkipTargetType)[y % 3]
                names = {
                    SkipTargetType.MEMBER: members,
                    SkipTargetType.GROUP: [g.name for _, g in self.owners()],
                    SkipTargetType.STAGE: [s.name for s in self.status.stages],
                }[skip_kind]
                machine.skip(
                    self.status, [SkipTarget(type=skip_kind, name=names[x % len(names)])], NOW
                )
            elif kind == "stop":
                machine.validate_stop(self.status, "because")
                self.stop_requested = True
                machine.stop(self.status)
            elif kind == "resume":
                machine.validate_resume(self.status)
                self.reopen(None)
            elif kind == "retry":
                failed = sorted(
                    m.name for _, _, m in self.status.members() if m.state is State.FAILED
                )
                chosen = [failed[x % len(failed)]] if failed and y % 2 else []
                machine.validate_retry(self.status, chosen)
                self.reopen(chosen)
            elif kind == "settle":
                self.settle()
        except ValueError:
            return "refused"
        return "applied"


def snapshot(status: RunStatus) -> dict[str, State | GateState]:
    found: dict[str, State | GateState] = {}
    for stage in status.stages:
        found[f"stage:{stage.name}"] = stage.state
        for group in stage.groups:
            found[f"group:{group.name}"] = group.state
            for m in group.members:
                found[f"member:{m.name}"] = m.state
    for g in status.gates():
        found[f"gate:{g.id}"] = g.state
    return found


OPS = st.tuples(
    st.sampled_from(
        ["launch"] * 6
        + ["finish"] * 5
        + ["gate", "approve", "skip", "stop", "resume", "retry", "settle", "settle"]
    ),
    st.integers(min_value=0, max_value=11),
    st.integers(min_value=0, max_value=11),
)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(
    ops=st.lists(OPS, min_size=1, max_size=60),
    group_budget=st.integers(min_value=0, max_value=1),
    concurrency=st.integers(min_value=1, max_value=3),
)
def test_random_controls_and_outcomes_keep_every_invariant(
    ops: list[tuple[str, int, int]], group_budget: int, concurrency: int
) -> None:
    driver = Driver(run_status(group_budget=group_budget, concurrency=concurrency))
    for op in ops:
        before = snapshot(driver.status)
        dumped = driver.status.model_dump_json()
        outcome = driver.apply(op)
        after = snapshot(driver.status)
        kind = op[0]

        if outcome == "refused":
            assert driver.status.model_dump_json() == dumped, f"a refused {kind} changed the run"
        for key, was in before.items():
            now = after[key]
            # Skipped is never overwritten, by anything.
            if was in (State.SKIPPED, GateState.SKIPPED):
                assert now == was, f"{key}: Skipped overwritten by {kind} ({now})"
            # A gate once opened or skipped stays so.
            if was in (GateState.COMPLETED, GateState.SKIPPED):
                assert now == was, f"{key}: {was} -> {now} by {kind}"
            # A member never moves backwards, but resume/retry reopen what failed.
            if key.startswith("member:") and isinstance(was, State) and isinstance(now, State):
                if was is State.COMPLETED:
                    assert now is State.COMPLETED, f"{key}: Completed -> {now} by {kind}"
                if RANK[now] < RANK[was]:
                    # The two ways back: a deferred update waits again; resume/retry reopen.
                    deferral = (kind, was, now) == ("finish", State.RUNNING, State.PENDING)
                    reopened = kind in ("resume", "retry") and was is State.FAILED
                    assert deferral or reopened, f"{key}: {was} -> {now} by {kind}"

        # A skipped or stopped owner releases its gates: none of them waits.
        for stage in driver.status.stages:
            owners: list[StageStatus | GroupStatus] = [stage, *stage.groups]
            for owner in owners:
                if owner.state in (State.SKIPPED, State.STOPPED):
                    gates = owner.before_gates + owner.after_gates
                    assert all(g.state is not GateState.PENDING for g in gates), owner.name
        # Caps hold.
        for stage, group in driver.owners():
            in_group = sum(1 for m in group.members if m.name in driver.in_flight)
            in_stage = sum(1 for s, _ in driver.in_flight.values() if s == stage.name)
            assert in_group <= group.max_concurrency
            assert in_stage <= stage.max_concurrency
        # Nothing starts once a failure no budget absorbs has happened.
        assert driver.launches_after_doom == 0
        # Nothing in flight is ever marked finished or waiting by a control.
        for name in driver.in_flight:
            m = driver.status.member(name)
            assert m is not None
            assert m.state is State.RUNNING, f"{name} in flight but {m.state} after {kind}"


def test_reconciling_after_a_membership_change_skips_the_departed_and_drops_passed_hops() -> None:
    from engine.domain.member import Member

    status = run_status()
    a1, a2, a3 = status.stages[0].groups[0].members
    a1.state = State.COMPLETED
    a3.state = State.FAILED
    hop_33 = VersionPair(kubernetes_version="1.33.5", cilium_version="1.18.6")
    hop_34 = VersionPair(kubernetes_version="1.34.2", cilium_version="1.18.6")
    a2.hops = [hop_33, hop_34]
    others = [m.name for _, _, m in status.members() if m.name not in ("a-2", "a-3")]
    described = [
        Member(
            name="a-2",
            kubernetes_version="1.33.5",
            cilium_version="1.18.6",
            cluster_id=2,
            pod_cidrs=["10.2.0.0/16"],
        )
    ]
    present = [*others, "a-2", "a-3", "z-9"]
    removed, joined = machine.reconcile_membership(status, present, described)
    assert (removed, joined) == ([], ["z-9"])
    assert a2.hops == [hop_34], "a hop already passed is not replayed"
    assert a2.from_.kubernetes_version == "1.33.5"
    assert status.joined_since_plan == ["z-9"]

    removed, _ = machine.reconcile_membership(status, others, [])
    assert removed == ["a-2", "a-3"]
    assert a3.state is State.SKIPPED
    assert "left the network" in (a3.message or "")
    assert a1.state is State.COMPLETED


def test_the_plans_order_is_the_order_the_scheduler_tries_members_in() -> None:
    """One ordering function: the planner's group order and the scheduler's launch order
    agree at the same moment, windows and names alike."""
    from strategies import bundled_catalog, plan
    from tests.strategies.conftest import member as planned_member
    from tests.strategies.conftest import strategy as planned_strategy

    saturday = {
        "schedule": {"weekly": {"dayOfWeek": "Saturday"}},
        "durationHours": 4,
        "startTime": "02:00",
    }
    soon = {**saturday, "startTime": "05:00"}
    closed = {**saturday, "schedule": {"weekly": {"dayOfWeek": "Wednesday"}}}
    now = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.UTC)  # a Saturday, 03:00
    members = [
        planned_member("a-closed", group="g", window=closed),
        planned_member("b-none", group="g"),
        planned_member("c-soon", group="g", window=soon),
        planned_member("d-open", group="g", window=saturday),
        planned_member("a-none", group="g"),
    ]
    result = plan(
        members,
        planned_strategy({"name": "s", "groups": [{"name": "g"}]}),
        Version.parse("1.33"),
        bundled_catalog(),
        now,
    )
    planned = [m.name for m in result.members()]
    statuses = [member(m.name) for m in reversed(members)]
    windows = {m.name: m.maintenance_window for m in members}
    assert [m.name for m in machine.launch_order(statuses, windows, now)] == planned
    assert planned == ["d-open", "c-soon", "a-none", "b-none", "a-closed"]
