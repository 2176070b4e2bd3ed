"""The network's mesh health: wait for the mesh after a change; re-read a Degraded one."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from engine.domain.durations import format_duration
from engine.domain.failures import failure_text
from engine.domain.network import NetworkStatus, PendingOperation
from engine.domain.network_activities import (
    ACTIVITY_WAIT_MESH_READY,
    MeshReadiness,
    WaitMeshReadyInput,
)
from workflows.network_core import NetworkCore
from workflows.network_patches import PATCH_DEGRADED_RECHECK
from workflows.policies import ONE_TRY, QUICK


class NetworkHealth(NetworkCore):
    """Sets Connected, Degraded or Failed from what the members report."""

    async def _settle(self, op: PendingOperation) -> MeshReadiness:
        """Wait for the whole mesh to report ready; set Connected, Degraded or Failed."""
        if not self.state.members:
            self._set_status(NetworkStatus.NOT_CONNECTED)
            return MeshReadiness(ready=True)
        try:
            readiness = await self._call(
                ACTIVITY_WAIT_MESH_READY,
                WaitMeshReadyInput(
                    members=self.state.member_names(), timeout=self.settings.mesh_ready_timeout
                ),
                MeshReadiness,
                waits=self.settings.mesh_ready_timeout,
                summary=f"wait for {len(self.state.members)} member(s) to report ready",
            )
        except ActivityError as error:
            message = failure_text(error)
            self._set_status(NetworkStatus.FAILED, f"reading mesh health failed: {message}")
            return MeshReadiness(ready=False)
        if readiness.ready:
            self.state.not_ready_links = []
            self._set_status(NetworkStatus.CONNECTED)
            self._log("meshReady", "every member sees every other ready", op)
        else:
            self.state.not_ready_links = readiness.not_ready_links
            message = (
                f"{len(readiness.not_ready_links)} link(s) not ready after "
                f"{format_duration(self.settings.mesh_ready_timeout)}"
            )
            self._set_status(NetworkStatus.DEGRADED, message)
            self._log("degraded", message, op)
        return readiness

    def _recheck_after(self) -> timedelta | None:
        """When to read a Degraded mesh again (None: it is not Degraded, or not idle)."""
        idle = self.state.holder is None and not self.state.pending and bool(self.state.members)
        if self.state.status is NetworkStatus.DEGRADED and idle and self._rechecks():
            return self.settings.degraded_recheck_interval
        return None

    def _rechecks(self) -> bool:
        """Whether this run may arm the re-check timer (replay-safe for older histories).

        Code since 036ed40 arms it unpatched and always writes
        ``degradedRecheckInterval`` into the network's input, so an input that
        carries the field was written by code with the timer. An input without it
        was written before: the timer then needs the patch marker, which histories
        recorded by that code do not have (they replay without the timer).
        """
        if self.rechecks is None:
            started_with_it = "degraded_recheck_interval" in self.settings.model_fields_set
            self.rechecks = started_with_it or workflow.patched(PATCH_DEGRADED_RECHECK)
        return self.rechecks

    async def _recheck(self) -> None:
        """Read the mesh once more: a Degraded network whose mesh healed is Connected."""
        if self._recheck_after() is None or self.lock.locked():
            return  # a run took the network, or an operation came, while the timer ran
        async with self.lock:
            try:
                # One read, one attempt: joins and runs wait for the lock meanwhile.
                readiness = await workflow.execute_activity(
                    ACTIVITY_WAIT_MESH_READY,
                    WaitMeshReadyInput(members=self.state.member_names(), timeout=timedelta(0)),
                    result_type=MeshReadiness,
                    start_to_close_timeout=QUICK,
                    retry_policy=ONE_TRY,
                    summary="re-read the degraded mesh",
                )
            except ActivityError:
                return  # unreadable for now: still Degraded, read again later
            if readiness.ready:
                self.state.not_ready_links = []
                self._set_status(NetworkStatus.CONNECTED)
                self._log("meshReady", "the degraded mesh healed: every member sees every other")
            elif readiness.not_ready_links != self.state.not_ready_links:
                self.state.not_ready_links = readiness.not_ready_links
                self._publish()
