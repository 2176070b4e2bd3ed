"""The update run's state and bookkeeping, shared by the parts of its workflow.

``UpdateRunWorkflow`` is assembled from parts, one per job (preparation, gates and
soaks, groups and members); each part reads and changes the run through this base:
its state, its failure, its change counter, its controls' record, its search
attributes and the Web UI's details.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from engine.domain import run as contract
from engine.domain import search_attributes
from engine.domain.run import (
    ControlAction,
    ControlRecord,
    RunState,
    State,
    UpdateRunInput,
)
from engine.domain.strategy import HealthSpec
from strategies.details import details_markdown
from workflows.run_patches import (
    PATCH_ONE_TIMER_PER_OPENING,
    PATCH_SURVIVE_ACTIVITY_ERRORS,
)

NETWORK_KEY = search_attributes.NETWORK
STATE_KEY = search_attributes.RUN_STATE
STAGE_KEY = search_attributes.STAGE
TARGET_KEY = search_attributes.TARGET_VERSION
MEMBER_KEY = search_attributes.MEMBER


@dataclass(frozen=True)
class HealthyMesh:
    """A mesh check that found the mesh healthy: when, after how many launches, of whom."""

    at: dt.datetime
    launches: int
    #: The run's ``network_members`` list checked (a re-read replaces the list).
    members: list[str]


class RunCore:
    """What every part of the update run shares: its state and how a change is told."""

    _input: UpdateRunInput
    _state: RunState
    #: Member name -> (stage, group) for members whose child workflow runs now.
    _in_flight: dict[str, tuple[str, str]]
    #: Member name -> the completion count at its latest launch.
    _launched_at: dict[str, int]
    #: Member name -> the members already in flight when it was launched.
    _in_flight_before: dict[str, list[str]]
    _changes: int
    _failed_reason: str | None
    #: How many resumes and retries this execution has seen.
    _reopens: int
    #: Activities of the run itself in flight (continue-as-new waits for none).
    _busy: int
    #: Whether this run continues as new during long waits (decided once, replay-safe).
    _can_while_waiting: bool
    #: Window openings with a timer armed (one each), and whether this run arms them so.
    _alarms: dict[dt.datetime, asyncio.Task[None]]
    _alarms_on: bool | None
    #: Whether the scheduler uses the planner's order (decided once, replay-safe).
    _shared_order: bool | None
    #: How the built-in health gates are tuned (the strategy's, else the defaults).
    _health: HealthSpec
    #: Members launched by this execution (a healthy mesh check is fresh only before any).
    _launches: int
    #: This execution's latest mesh check that found the mesh healthy.
    _healthy_mesh: HealthyMesh | None
    #: The search attributes last upserted (upsert only on change).
    _published: tuple[tuple[str, str], ...]
    #: Bumped by every publish; the Web UI's details are rendered once per batch of them.
    _status_edits: int
    _rendered_edits: int
    _details: asyncio.Task[None] | None

    def _survives(self) -> bool:
        """Whether an activity error becomes a failed stage or run (else it is re-raised).

        Histories recorded before this rule replay with the old behaviour: the error
        failed the workflow there.
        """
        return workflow.patched(PATCH_SURVIVE_ACTIVITY_ERRORS)

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """An activity of the run is in flight: no continue-as-new until it has answered."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    def _halted(self) -> bool:
        return self._state.stop_requested or self._failed_reason is not None

    def _fail_run(self, reason: str) -> None:
        self._failed_reason = reason
        status = self._state.status
        status.state = State.FAILED
        status.error = reason
        status.completed_time = workflow.now()
        self._bump()

    def _record(
        self, action: ControlAction, request: contract.Control | None, details: str | None = None
    ) -> None:
        self._state.status.controls.append(
            ControlRecord(
                action=action,
                at=workflow.now(),
                identity=request.identity if request else "meshfleet",
                reason=request.reason if request else None,
                details=details,
            )
        )
        self._bump()

    def _bump(self) -> None:
        self._changes += 1
        self._publish()

    async def _next_change(self, until: dt.datetime | None = None) -> None:
        """Wait for any change of the run, or until ``until`` (a window's opening)."""
        seen = self._changes
        if until is not None:
            if self._alarms_on is None:
                self._alarms_on = workflow.patched(PATCH_ONE_TIMER_PER_OPENING)
            if self._alarms_on:
                # One timer per opening, however often the run changes meanwhile.
                self._alarm(until)
                await workflow.wait_condition(lambda: self._changes != seen)
                return
        timeout = max(until - workflow.now(), timedelta(seconds=1)) if until else None
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._changes != seen,
                timeout=timeout,
                timeout_summary="next window opening",
            )

    def _alarm(self, at: dt.datetime) -> None:
        """Make sure one timer rings (counts as a change) at ``at``."""
        if at in self._alarms:
            return

        async def ring() -> None:
            await workflow.sleep(
                max(at - workflow.now(), timedelta(seconds=1)), summary="next window opening"
            )
            del self._alarms[at]
            self._bump()

        self._alarms[at] = asyncio.create_task(ring())

    async def _keep_details(self) -> None:
        """Render the Web UI's current details once per batch of status edits.

        Rendering reads every member, and an activation can edit the status once per
        member event; waiting for the edits to settle makes that once per activation.
        Details are no command, so this adds nothing to history (replay is unchanged).
        """
        while True:
            await workflow.wait_condition(lambda: self._status_edits != self._rendered_edits)
            self._rendered_edits = self._status_edits
            workflow.set_current_details(details_markdown(self._state.status))

    def _publish(self) -> None:
        """Keep the search attributes (now) and the Web UI's current details (soon) up to date."""
        self._status_edits += 1
        status = self._state.status
        pairs: list[SearchAttributeUpdate[str]] = [
            NETWORK_KEY.value_set(status.network),
            STATE_KEY.value_set(status.state.value),
        ]
        if status.target is not None:
            pairs.append(TARGET_KEY.value_set(status.target.kubernetes_version))
        if status.current_stage:
            pairs.append(STAGE_KEY.value_set(status.current_stage))
        signature = tuple((p.key.name, str(p.value)) for p in pairs)
        if signature != self._published:
            workflow.upsert_search_attributes(pairs)
            self._published = signature
