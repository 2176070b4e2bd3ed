"""The network's operation queue: accept an operation, answer its caller (done, queued
behind a run, or handed over to the next run after a continue-as-new).
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import workflow

from engine.domain.network import (
    MAX_KEPT_RESULTS,
    MemberResult,
    MembershipChange,
    MembershipOutcome,
    OperationResult,
    PendingOperation,
)
from engine.domain.network_requests import queue_problem
from workflows.network_core import NetworkCore


class NetworkQueue(NetworkCore):
    """Queues membership operations and answers the callers waiting for them."""

    def _queue_problems(self) -> list[str]:
        problem = queue_problem(self.state)
        return [problem] if problem else []

    def _accept(
        self, kind: MembershipChange, members: Sequence[str], *, force: bool = False
    ) -> PendingOperation:
        op = PendingOperation(
            id=f"op-{self.state.next_operation}",
            kind=kind,
            members=list(members),
            force=force,
            requested_at=workflow.now(),
            queued_behind=self.state.holder,
        )
        self.state.next_operation += 1
        self.state.pending.append(op)
        if kind is MembershipChange.DELETE:
            self.state.deleting = True
        behind = f", queued behind update run {op.queued_behind!r}" if op.queued_behind else ""
        what = f"{kind.value} {', '.join(members)}".strip()
        self._log("accepted", f"{what}{behind}", op)
        self._publish()
        return op

    async def _outcome(self, op: PendingOperation) -> OperationResult:
        """Wait for the operation's result, or answer "queued" while a run holds the network."""
        self.awaited[op.id] = True
        try:
            await workflow.wait_condition(
                lambda: (
                    op.id in self.results
                    or self._held_while_pending(op)
                    or self._handing_over(op.id)
                )
            )
        finally:
            self.awaited.pop(op.id, None)
        if op.id in self.results:
            return self.results.pop(op.id)
        if not self._held_while_pending(op):
            return self._handed_over(op)
        return self._queued(op)

    def _queued(self, op: PendingOperation) -> OperationResult:
        holder = self.state.holder
        message = (
            f"queued: update run {holder!r} holds the network; this runs when the run releases it"
        )
        return OperationResult(
            network=self.state.name,
            operation=op.id,
            kind=op.kind,
            queued=True,
            holder=holder,
            members=[
                MemberResult(cluster=m, outcome=MembershipOutcome.QUEUED, message=message)
                for m in op.members
            ],
            status=self.state.status,
            message=message,
        )

    def _held_while_pending(self, op: PendingOperation) -> bool:
        return self.state.holder is not None and any(p.id == op.id for p in self.state.pending)

    def _handing_over(self, op_id: str) -> bool:
        """The run is about to continue as new and this operation has not started."""
        running = self.state.current is not None and self.state.current.id == op_id
        return self._draining() and not running

    def _handed_over(self, op: PendingOperation) -> OperationResult:
        """Answer "continued": the operation runs in the next run, which keeps its result."""
        if op.id not in self.state.handed_over:
            self.state.handed_over.append(op.id)
        return OperationResult(
            network=self.state.name,
            operation=op.id,
            kind=op.kind,
            continued=True,
            status=self.state.status,
            message="the network continues as new before this operation runs; ask for its result",
        )

    def _keep_for_caller(self, result: OperationResult) -> None:
        """Keep a handed-over operation's result in the state until its caller asks (bounded)."""
        self.state.kept_results.append(result)
        for old in self.state.kept_results[:-MAX_KEPT_RESULTS]:
            self.state.handed_over.remove(old.operation)
        del self.state.kept_results[:-MAX_KEPT_RESULTS]
