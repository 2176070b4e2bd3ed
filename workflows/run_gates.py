"""The update run's checks around a stage: the built-in health gates, the soak, the
Approval and ScheduledStart gates; and how a stage fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from engine.domain import run as contract
from engine.domain.failures import failure_text
from engine.domain.run import (
    GateKind,
    GateState,
    GateStatus,
    GroupStatus,
    StageStatus,
    State,
)
from engine.domain.strategy import (
    Gate,
    GateType,
)
from engine.domain.windows import DayOfWeek
from strategies import next_scheduled_start
from workflows.policies import MARGIN, MESH_CHECK_FRESH_FOR, QUICK, RUN_RETRY
from workflows.run_core import HealthyMesh, RunCore
from workflows.run_patches import (
    PATCH_AFTER_CHECKS_TOGETHER,
    PATCH_BEFORE_CHECK_REUSES_AFTER,
    PATCH_SKIPPED_STAGE_STAYS_SKIPPED,
    PATCH_SOAK_KEEPS_SERVED,
    PATCH_SOAK_ONLY_AFTER_UPGRADES,
)


class RunGates(RunCore):
    """A stage's gates, health checks and soak; a failed check fails the stage."""

    def _fail_stage(self, stage: StageStatus, message: str) -> None:
        """Fail ``stage`` (and so the run), unless it was skipped: Skipped is never overwritten."""
        if stage.state is State.SKIPPED and workflow.patched(PATCH_SKIPPED_STAGE_STAYS_SKIPPED):
            return
        stage.state = State.FAILED
        stage.message = message
        stage.completed_time = workflow.now()
        if self._failed_reason is None:
            self._failed_reason = f"stage {stage.name} failed: {message}"
        self._bump()

    def _check_broke(self, stage: StageStatus, check: str, error: ActivityError) -> bool:
        """A gate's or soak's read failed for good: the stage fails (the run stays open)."""
        if not self._survives():
            raise error
        self._fail_stage(stage, f"{check} could not be checked: {failure_text(error)}")
        return False

    async def _mesh_gate(self, stage: StageStatus, when: str, timeout: timedelta) -> bool:
        """Built-in gate: the whole mesh healthy (cannot be switched off, only tuned)."""
        return self._judge_mesh(stage, when, await self._read_mesh(stage, when, timeout))

    async def _read_mesh(
        self, stage: StageStatus, when: str, timeout: timedelta
    ) -> contract.MeshHealthResult | ActivityError:
        try:
            with self._working():
                result: contract.MeshHealthResult = await workflow.execute_activity(
                    contract.CHECK_MESH_HEALTH,
                    contract.MeshHealthRequest(
                        members=self._state.network_members, timeout=timeout
                    ),
                    result_type=contract.MeshHealthResult,
                    start_to_close_timeout=timeout + MARGIN,
                    heartbeat_timeout=self._input.timings.heartbeat_timeout,
                    retry_policy=RUN_RETRY,
                    summary=f"mesh health {when} stage {stage.name}",
                )
                return result
        except ActivityError as error:
            return error

    def _judge_mesh(
        self, stage: StageStatus, when: str, result: contract.MeshHealthResult | ActivityError
    ) -> bool:
        if isinstance(result, ActivityError):
            return self._check_broke(stage, f"mesh health {when} the stage", result)
        if result.healthy:
            self._healthy_mesh = HealthyMesh(
                workflow.now(), self._launches, self._state.network_members
            )
            return True
        links = "; ".join(
            f"{link.viewer} -> {link.peer}: {link.reason}" for link in result.not_ready[:5]
        )
        self._fail_stage(stage, f"mesh not healthy {when} the stage: {links}")
        return False

    def _mesh_still_healthy(self) -> bool:
        """Whether this run's latest healthy mesh check still stands for a stage's check
        before it: at most ``MESH_CHECK_FRESH_FOR`` old, no member started since or in
        flight, the same members. That is the check after the stage this one follows,
        when nothing (a soak, a gate, a stop) came between: asking the mesh again would
        read the same links a moment later. Runs from before
        ``run-before-check-reuses-after`` always asked again."""
        healthy = self._healthy_mesh
        if (
            healthy is None
            or self._in_flight
            or healthy.launches != self._launches
            or healthy.members is not self._state.network_members
            or workflow.now() - healthy.at > MESH_CHECK_FRESH_FOR
        ):
            return False
        return workflow.patched(PATCH_BEFORE_CHECK_REUSES_AFTER)

    async def _endpoints_gate(self, stage: StageStatus, timeout: timedelta) -> bool:
        """Built-in gate: every global service back to its baseline of ready endpoints."""
        return self._judge_endpoints(stage, await self._read_endpoints(stage, timeout))

    async def _read_endpoints(
        self, stage: StageStatus, timeout: timedelta
    ) -> contract.ServiceEndpointsResult | ActivityError:
        try:
            with self._working():
                result: contract.ServiceEndpointsResult = await workflow.execute_activity(
                    contract.SERVICE_ENDPOINTS,
                    contract.ServiceEndpointsRequest(
                        members=self._state.network_members,
                        baseline=self._state.baseline,
                        timeout=timeout,
                    ),
                    result_type=contract.ServiceEndpointsResult,
                    start_to_close_timeout=timeout + MARGIN,
                    heartbeat_timeout=self._input.timings.heartbeat_timeout,
                    retry_policy=RUN_RETRY,
                    summary=f"endpoints back to baseline after stage {stage.name}",
                )
                return result
        except ActivityError as error:
            return error

    def _judge_endpoints(
        self, stage: StageStatus, result: contract.ServiceEndpointsResult | ActivityError
    ) -> bool:
        if isinstance(result, ActivityError):
            return self._check_broke(stage, "the endpoints baseline after the stage", result)
        if not result.below_baseline:
            return True
        self._fail_stage(
            stage, f"global services below their baseline: {', '.join(result.below_baseline)}"
        )
        return False

    async def _after_checks(self, stage: StageStatus, timeout: timedelta) -> bool:
        """The built-in gates after a stage: the mesh, then the endpoints (runs from before
        ``run-after-checks-together``); since then both at once. Each waits for its own
        condition, so the next stage starts one round trip sooner (and, on real clusters,
        without waiting for the mesh before even starting to wait for the endpoints). Both
        must pass; when both fail, the stage names the mesh, as it always did."""
        if not workflow.patched(PATCH_AFTER_CHECKS_TOGETHER):
            return await self._mesh_gate(stage, "after", timeout) and await self._endpoints_gate(
                stage, timeout
            )
        mesh, endpoints = await asyncio.gather(
            self._read_mesh(stage, "after", timeout), self._read_endpoints(stage, timeout)
        )
        return self._judge_mesh(stage, "after", mesh) and self._judge_endpoints(stage, endpoints)

    async def _soak(self, stage: StageStatus, interval: timedelta) -> bool:
        """``afterStageWait``: watch health until it ends; a failed check fails the stage."""
        wait = stage.after_stage_wait
        if wait is None or wait.state.finished:
            return True
        upgraded = any(m.state is State.COMPLETED for g in stage.groups for m in g.members)
        if not upgraded and workflow.patched(PATCH_SOAK_ONLY_AFTER_UPGRADES):
            wait.state = State.SKIPPED
            wait.message = "nothing was upgraded in this stage: no soak needed"
            self._bump()
            return True
        keeps_served = workflow.patched(PATCH_SOAK_KEEPS_SERVED)
        served = timedelta(seconds=wait.served_seconds if keeps_served else 0)
        wait.state = State.RUNNING
        wait.until = workflow.now() + timedelta(seconds=wait.seconds) - served
        self._bump()
        while wait.state is State.RUNNING:
            left = wait.until - workflow.now()
            if left <= timedelta(0):
                break
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: wait.state is not State.RUNNING or self._halted(),
                    timeout=min(interval, left),
                    timeout_summary=f"soak after stage {stage.name}",
                )
            if self._halted():
                if keeps_served:
                    left = max(wait.until - workflow.now(), timedelta(0))
                    wait.served_seconds = wait.seconds - left.total_seconds()
                return False
            if wait.state is not State.RUNNING:
                break
            wait.checks += 1
            try:
                with self._working():
                    check = await workflow.execute_activity(
                        contract.CHECK_MESH_HEALTH,
                        contract.MeshHealthRequest(members=self._state.network_members),
                        result_type=contract.MeshHealthResult,
                        start_to_close_timeout=QUICK,
                        retry_policy=RUN_RETRY,
                        summary=f"soak check {wait.checks} of stage {stage.name}",
                    )
            except ActivityError as error:
                wait.state = State.FAILED
                return self._check_broke(stage, f"soak check {wait.checks}", error)
            if not check.healthy:
                wait.state = State.FAILED
                links = "; ".join(
                    f"{link.viewer} -> {link.peer}: {link.reason}" for link in check.not_ready[:5]
                )
                self._fail_stage(stage, f"health check failed during the soak: {links}")
                return False
        if wait.state is State.RUNNING:
            wait.state = State.COMPLETED
        self._bump()
        return True

    async def _pass_gates(self, gates: list[GateStatus], owner: StageStatus | GroupStatus) -> bool:
        """Wait for each gate; ScheduledStart opens by itself at its time (or by approval)."""
        for gate in gates:
            if gate.state in (GateState.COMPLETED, GateState.SKIPPED):
                continue
            gate.state = GateState.PENDING
            owner.state = State.PENDING
            timeout: timedelta | None = None
            if gate.kind is GateKind.SCHEDULED_START:
                opens = next_scheduled_start(
                    Gate(
                        type=GateType.SCHEDULED_START,
                        start_day=DayOfWeek(gate.start_day) if gate.start_day else None,
                        start_time=gate.start_time,
                        utc_offset=gate.utc_offset,
                    ),
                    workflow.now(),
                )
                gate.opens_at = opens
                timeout = max(opens - workflow.now(), timedelta(0))
                gate.message = f"opens at {opens.isoformat()}"
            else:
                gate.message = f"waiting for approval: meshfleet run approve RUN {gate.id}"
            self._bump()
            waiting_since = workflow.now()
            try:
                await workflow.wait_condition(
                    lambda gate=gate: gate.state is not GateState.PENDING or self._halted(),  # type: ignore[misc]
                    timeout=timeout,
                    timeout_summary=f"gate {gate.id}",
                )
            except TimeoutError:
                gate.state = GateState.COMPLETED
                gate.completed_at = workflow.now()
                gate.completed_by = "schedule"
            if gate.state is GateState.PENDING:  # halted while waiting
                return False
            _record_gate_wait(gate.kind, workflow.now() - waiting_since)
            if gate.state is GateState.SKIPPED and owner.state is State.SKIPPED:
                return False  # the owner was skipped while its gate waited
            gate.message = None
            owner.state = State.RUNNING
            self._bump()
        return True


def _record_gate_wait(kind: GateKind, waited: timedelta) -> None:
    """Observe a gate's wait on the worker's meter (replay-safe: never during replay)."""
    workflow.metric_meter().create_histogram_float(
        contract.GATE_WAIT_METRIC, contract.GATE_WAIT_DESCRIPTION, "s"
    ).record(waited.total_seconds(), {"kind": kind.value})


def is_skipped(owner: StageStatus | GroupStatus) -> bool:
    """Read the owner's state afresh (a control may have skipped it during an await)."""
    return owner.state is State.SKIPPED
