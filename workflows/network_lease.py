"""The network's hold as a lease: bound to the holding run's execution, watched, and
ended however that execution ends.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

from engine.domain.failures import failure_text
from engine.domain.network import HolderExecution
from engine.domain.network_activities import ACTIVITY_WATCH_HOLDER, HolderEnd, WatchHolderInput
from workflows.network_core import NetworkCore
from workflows.network_patches import PATCH_HOLDER_LEASE
from workflows.policies import NETWORK_RETRY, QUICK


class NetworkLease(NetworkCore):
    """Watches the holder's execution; ends the hold when it closes."""

    def _lease(self, execution: HolderExecution | None) -> None:
        """Bind the hold to the holder's execution and watch it (holds of earlier code: not)."""
        if execution is None or execution == self.state.holder_execution:
            return
        if not workflow.patched(PATCH_HOLDER_LEASE):
            return
        self.state.holder_execution = execution
        self._watch()

    def _watch(self) -> None:
        """Start the watcher of the holder's execution, unless it already watches it."""
        holder = self.state.holder_execution
        if self.watched == holder and self.watcher is not None and not self.watcher.done():
            return
        self._stop_watching()
        if holder is not None:
            self.watched = holder
            self.watcher = asyncio.create_task(self._watch_holder(holder))

    def _stop_watching(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()
        self.watcher, self.watched = None, None

    async def _watch_holder(self, holder: HolderExecution) -> None:
        """Wait until the holder's execution closes, however it closes; then end its hold."""
        period = self.settings.holder_watch_period
        while True:
            try:
                end = await workflow.execute_activity(
                    ACTIVITY_WATCH_HOLDER,
                    WatchHolderInput(holder=holder, period=period),
                    result_type=HolderEnd,
                    start_to_close_timeout=period + QUICK,
                    heartbeat_timeout=self.settings.heartbeat_timeout,
                    retry_policy=NETWORK_RETRY,
                    summary=f"watch update run {holder.workflow_id} until it ends",
                )
            except ActivityError as error:  # not retryable: look again after a pause
                self._log("warning", f"watching the holder failed: {failure_text(error)}")
                await workflow.sleep(QUICK)
                continue
            if end.ended:
                break
        if self.state.holder_execution == holder and self.state.holder is not None:
            self.watcher, self.watched = None, None
            self._end_hold(
                "leaseEnded",
                f"update run {self.state.holder!r} ended ({end.how}) holding the network; "
                "its hold ended with it",
            )

    def _end_hold(self, event: str, message: str) -> None:
        """The network is free again: stop watching, log why, let the queue run."""
        self._stop_watching()
        self.state.holder = None
        self.state.holder_execution = None
        self._log(event, f"{message}; {len(self.state.pending)} queued operation(s) to run")
        self._publish()
