"""The network workflow's state and shared steps, used by the parts of its workflow.

``NetworkWorkflow`` is assembled from parts, one per job (the operation queue, the
hold's lease, the mesh's health, membership changes); each part reaches the network
through this base: its state, its activity calls, its results, its log and the
Web UI's details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from engine.domain.failures import failure_text
from engine.domain.network import (
    HolderExecution,
    LogEntry,
    LogSummary,
    MemberResult,
    NetworkSettings,
    NetworkState,
    NetworkStatus,
    OperationResult,
    PendingOperation,
)
from engine.domain.network_activities import MeshReadiness
from workflows.policies import NETWORK_RETRY, NETWORK_RETRY_FOR, QUICK

#: Error type of an update rejected by a validator (the client maps it to invalid input).
REJECTED = "MeshfleetRejected"
#: Rows of the log shown in the Web UI's current details.
DETAILS_LOG_ROWS = 8

T = TypeVar("T")


def reject(problems: Sequence[str]) -> None:
    """Refuse an update in its validator: every problem said, nothing reaches history."""
    if problems:
        raise ApplicationError("; ".join(problems), type=REJECTED, non_retryable=True)


class NetworkCore:
    """What every part of the network workflow shares: its state and how it calls out."""

    settings: NetworkSettings
    state: NetworkState
    #: Held while a membership operation runs and while a run takes the network.
    lock: asyncio.Lock
    #: Results for update handlers still waiting (never persisted: continue-as-new
    #: happens only once every handler has finished).
    results: dict[str, OperationResult]
    awaited: dict[str, bool]
    #: Whether this run re-reads a Degraded mesh (decided once, see ``_rechecks``).
    rechecks: bool | None
    #: The task watching the holder's execution, and the execution it watches.
    watcher: asyncio.Task[None] | None
    watched: HolderExecution | None
    #: Whether this run continues as new at its own bound (histories of earlier code: no).
    bounded: bool

    def _draining(self) -> bool:
        """Long enough to continue as new: start nothing new, hand waiting callers over.

        Callers still waiting for a queued operation are answered "continued"
        (their operation travels in the state; the client asks the next run for
        its result), so every handler finishes and no update is lost.
        """
        if not self.bounded:
            return False  # histories of earlier code wait for the server's hint only
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.settings.continue_as_new_after
        )

    async def _call(
        self,
        activity: str,
        arg: Any,
        result_type: type[T] | None,
        *,
        summary: str,
        waits: timedelta | None = None,
    ) -> T:
        """Run one activity: a quick backend call, or (``waits``) a heartbeating wait."""
        if waits is None:
            timeouts: dict[str, Any] = {"start_to_close_timeout": QUICK}
        else:
            timeouts = {
                "start_to_close_timeout": waits + QUICK,
                "heartbeat_timeout": self.settings.heartbeat_timeout,
            }
        result: T = await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            schedule_to_close_timeout=max(
                NETWORK_RETRY_FOR, (waits or timedelta()) + NETWORK_RETRY_FOR
            ),
            retry_policy=NETWORK_RETRY,
            summary=summary,
            **timeouts,
        )
        return result

    async def _all(self, calls: Sequence[Any]) -> str | None:
        """Run activity calls in parallel; the first failure's reason, or None."""
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failures = [failure_text(o) for o in outcomes if isinstance(o, BaseException)]
        return failures[0] if failures else None

    def _key(self, op: PendingOperation, cluster: str, step: str) -> str:
        """Idempotency key: the same on every retry of this step, unique to this network."""
        return f"{self.state.name}/{self.state.uid}/{op.id}/{cluster}/{step}"

    def _set_status(self, status: NetworkStatus, message: str | None = None) -> None:
        self.state.status = status
        self.state.status_message = message
        self._publish()

    def _result(
        self,
        op: PendingOperation,
        results: dict[str, MemberResult],
        readiness: MeshReadiness | None = None,
        *,
        message: str | None = None,
        deleted: bool = False,
        rule_failed: bool = False,
    ) -> OperationResult:
        ordered = [results[m] for m in op.members if m in results]
        ordered += [r for name, r in results.items() if name not in op.members]
        return OperationResult(
            network=self.state.name,
            operation=op.id,
            kind=op.kind,
            members=ordered,
            status=self.state.status,
            mesh_ready=readiness.ready if readiness else None,
            not_ready_links=readiness.not_ready_links if readiness else [],
            message=message or (self.state.status_message if not rule_failed else None),
            deleted=deleted,
        )

    def _summarize(self, result: OperationResult) -> str:
        counts: dict[str, int] = {}
        for member in result.members:
            counts[member.outcome.value] = counts.get(member.outcome.value, 0) + 1
        parts = [f"{n} {outcome}" for outcome, n in counts.items()]
        if result.deleted:
            parts.append("network deleted")
        if result.message:
            parts.append(result.message)
        return "; ".join(parts) + f" (status {result.status.value})"

    def _log(
        self,
        event: str,
        message: str,
        op: PendingOperation | None = None,
        cluster: str | None = None,
    ) -> None:
        self.state.log.append(
            LogEntry(
                at=workflow.now(),
                event=event,
                message=message,
                operation=op.id if op else None,
                cluster=cluster,
            )
        )
        dropped = self.state.log[: -self.settings.log_limit]
        if dropped:
            # The log is bounded: what it drops is counted, never silently lost.
            self.state.log_summary = self.state.log_summary or LogSummary()
            self.state.log_summary.fold(dropped)
            del self.state.log[: -self.settings.log_limit]

    def _publish(self) -> None:
        """Current details for the Web UI: status, holder, members, queue, recent log."""
        state = self.state
        lines = [
            f"**{state.status.value}**"
            + (f": {state.status_message}" if state.status_message else "")
        ]
        if state.holder:
            lines.append(f"Held by update run `{state.holder}`; membership changes wait.")
        if state.current:
            current = state.current
            lines.append(
                f"Running: `{current.id}` {current.kind.value} {', '.join(current.members)}"
            )
        if state.pending:
            queued = ", ".join(
                f"`{p.id}` {p.kind.value} {' '.join(p.members)}".strip() for p in state.pending
            )
            lines.append(f"Queued: {queued}")
        lines += ["", f"| Member ({len(state.members)}) | Cluster id | Joined |", "|---|---|---|"]
        lines += [
            f"| {m.name} | {m.cluster_id}{' (assigned)' if m.cluster_id_assigned else ''} "
            f"| {m.joined_at:%Y-%m-%d %H:%M:%S} |"
            for m in state.members
        ]
        if state.left_drained:
            lines += ["", "| LEFT DRAINED: member | services | by run |", "|---|---|---|"]
            lines += [
                f"| {e.member} | {', '.join(e.services)} | {e.run_id} |"
                for e in state.left_drained[:20]
            ]
        if state.not_ready_links:
            lines += ["", "| Not ready: viewer | peer | reason |", "|---|---|---|"]
            lines += [f"| {x.viewer} | {x.peer} | {x.reason} |" for x in state.not_ready_links[:20]]
        if state.log:
            lines += ["", "Recent:"]
            lines += [
                f"- {e.at:%H:%M:%S} {e.event}{f' {e.cluster}' if e.cluster else ''}: {e.message}"
                for e in state.log[-DETAILS_LOG_ROWS:]
            ]
        workflow.set_current_details("\n".join(lines))
