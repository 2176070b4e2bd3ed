"""The network workflow: one long-lived entity per cross-cluster network (``network/<name>``).

It owns the membership. Join, remove and delete arrive as Updates whose
validators reject, before anything reaches history, every request that breaks
a rule needing no I/O; accepted requests become operations queued in order and
run one at a time by the main loop (under a lock), with the rules that need I/O
checked by activities first. An update run takes the network with ``acquire``:
membership operations then wait in the queue (their callers are told so) and
run when it ``release``s it. All state lives in one :class:`NetworkState`,
carried across continue-as-new.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from engine.domain import search_attributes
from engine.domain.network import (
    MAX_LEFT_DRAINED,
    NETWORK_WORKFLOW,
    QUERY_DESCRIBE,
    UPDATE_ACQUIRE,
    UPDATE_CLEAR_DRAINED,
    UPDATE_DELETE,
    UPDATE_JOIN,
    UPDATE_OPERATION,
    UPDATE_OPERATOR_RELEASE,
    UPDATE_RELEASE,
    UPDATE_REMOVE,
    UPDATE_REPORT_LEFT_DRAINED,
    UPDATE_SERVICES,
    HolderExecution,
    LeftDrained,
    MembershipChange,
    NetworkDescription,
    NetworkInput,
    NetworkState,
    OperationResult,
    PendingOperation,
)
from engine.domain.network_activities import (
    ACTIVITY_LIST_SERVICES,
    ACTIVITY_LOOK_AT_HOLDER,
    GlobalServices,
    HolderEnd,
    ListServicesInput,
)
from engine.domain.network_requests import (
    AcquireRequest,
    ClearDrainedRequest,
    DeleteRequest,
    JoinRequest,
    OperationRequest,
    OperatorReleaseRequest,
    ReleaseRequest,
    RemoveRequest,
    ReportLeftDrainedRequest,
    ServicesRequest,
    acquire_problem,
    delete_problem,
    join_problems,
    operator_release_problem,
    remove_problems,
)
from engine.domain.run import run_workflow_id
from engine.domain.services import ServicesReport, services_report
from workflows.network_core import REJECTED, reject
from workflows.network_lease import NetworkLease
from workflows.network_membership import NetworkMembership
from workflows.network_patches import PATCH_HISTORY_BOUND
from workflows.network_queue import NetworkQueue

NETWORK_KEY = search_attributes.NETWORK


@workflow.defn(name=NETWORK_WORKFLOW)
class NetworkWorkflow(NetworkQueue, NetworkLease, NetworkMembership):
    """One cross-cluster network: its members, its status, its holder and its queue."""

    @workflow.init
    def __init__(self, request: NetworkInput) -> None:
        # Each field is explained where it is declared: ``NetworkCore`` (network_core.py).
        self.settings = request.settings
        self.state = request.state or NetworkState(
            name=request.name, uid=workflow.info().run_id, created_at=workflow.now()
        )
        self.lock = asyncio.Lock()
        self.results = {}
        self.awaited = {}
        self.rechecks = None
        self.watcher = None
        self.watched = None
        self.bounded = False

    # --- the main loop --------------------------------------------------------------------

    @workflow.run
    async def run(self, request: NetworkInput) -> NetworkDescription:
        """Run queued membership operations in order until deleted; continue-as-new when told."""
        if workflow.info().typed_search_attributes.get(NETWORK_KEY) != self.state.name:
            workflow.upsert_search_attributes([NETWORK_KEY.value_set(self.state.name)])
        self._publish()
        self._watch()  # a lease carried over by continue-as-new is watched again
        self.bounded = workflow.patched(PATCH_HISTORY_BOUND)
        while not self.state.deleted:
            try:
                await workflow.wait_condition(
                    lambda: self._next_runnable() or self._time_to_continue(),
                    timeout=self._recheck_after(),
                    timeout_summary="re-read the degraded mesh",
                )
            except TimeoutError:
                await self._recheck()
                continue
            if self._next_runnable():
                await self._run_next()
                continue
            if not self._time_to_continue():
                continue  # an acquire took the lock first; wait again
            workflow.continue_as_new(
                NetworkInput(name=self.state.name, settings=self.settings, state=self.state)
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return NetworkDescription.of(self.state)

    def _runnable(self) -> bool:
        return bool(self.state.pending) and self.state.holder is None and not self.lock.locked()

    def _next_runnable(self) -> bool:
        """A queued operation may start now (not while the run hands over to the next)."""
        return self._runnable() and not self._draining()

    def _time_to_continue(self) -> bool:
        """History long enough (our bound, or the server's hint), no handler or step in flight.

        Queued operations whose callers still wait keep their handlers open, so
        they run first; operations already answered "queued" travel in the state.
        """
        long_enough = workflow.info().is_continue_as_new_suggested() or self._draining()
        return long_enough and workflow.all_handlers_finished() and not self.lock.locked()

    async def _run_next(self) -> None:
        async with self.lock:
            # An acquire may have taken the lock (and the network) first.
            if self.state.holder is not None or not self.state.pending:
                return
            op = self.state.pending.pop(0)
            self.state.current = op
            self._log("started", f"{op.kind.value} {', '.join(op.members)}".strip(), op)
            self._publish()
            if op.kind is MembershipChange.JOIN:
                result = await self._join(op)
            elif op.kind is MembershipChange.REMOVE:
                result = await self._remove(op)
            else:
                result = await self._delete(op)
            self.state.current = None
            self._log("finished", self._summarize(result), op)
            self._publish()
            if self.awaited.get(op.id):
                self.results[op.id] = result
            if op.id in self.state.handed_over:
                self._keep_for_caller(result)

    # --- membership updates ---------------------------------------------------------------

    @workflow.update(name=UPDATE_JOIN)
    async def join(self, request: JoinRequest) -> OperationResult:
        """Join clusters; per member: joined, rejected (with the rule), failed or queued."""
        op = self._accept(MembershipChange.JOIN, request.members)
        return await self._outcome(op)

    @join.validator
    def _validate_join(self, request: JoinRequest) -> None:
        reject(join_problems(self.state, request.members) + self._queue_problems())

    @workflow.update(name=UPDATE_REMOVE)
    async def remove(self, request: RemoveRequest) -> OperationResult:
        """Remove members: drain their global services, disconnect them, wait until forgotten."""
        op = self._accept(MembershipChange.REMOVE, request.members)
        return await self._outcome(op)

    @remove.validator
    def _validate_remove(self, request: RemoveRequest) -> None:
        reject(remove_problems(self.state, request.members) + self._queue_problems())

    @workflow.update(name=UPDATE_DELETE)
    async def delete(self, request: DeleteRequest) -> OperationResult:
        """Delete the network (with ``force``: remove every member first), then end."""
        op = self._accept(MembershipChange.DELETE, [], force=request.force)
        return await self._outcome(op)

    @delete.validator
    def _validate_delete(self, request: DeleteRequest) -> None:
        problem = delete_problem(self.state, request.force)
        reject(([problem] if problem else []) + self._queue_problems())

    @workflow.update(name=UPDATE_OPERATION)
    async def operation(self, request: OperationRequest) -> OperationResult:
        """The result of an operation whose caller was handed over by a continue-as-new."""

        def kept() -> OperationResult | None:
            return next((r for r in self.state.kept_results if r.operation == request.id), None)

        def waiting() -> PendingOperation | None:
            return next((p for p in self.state.pending if p.id == request.id), None)

        await workflow.wait_condition(
            lambda: (
                kept() is not None
                or (waiting() is not None and self.state.holder is not None)
                or self._handing_over(request.id)
            )
        )
        result = kept()
        if result is not None:
            self.state.kept_results.remove(result)
            self.state.handed_over.remove(request.id)
            return result
        op = waiting()
        assert op is not None  # not finished and not running: it still waits in the queue
        if self.state.holder is not None:
            return self._queued(op)
        return self._handed_over(op)

    @operation.validator
    def _validate_operation(self, request: OperationRequest) -> None:
        if request.id not in self.state.handed_over:
            reject([f"no operation {request.id!r} waits for its caller on this network"])

    # --- holding the network (update runs) ------------------------------------------------

    @workflow.update(name=UPDATE_ACQUIRE)
    async def acquire(self, request: AcquireRequest) -> NetworkDescription:
        """An update run takes the network, after any membership operation in flight."""
        if self.state.holder == request.run_id:
            self._lease(request.execution())  # the same run again (a retry, or a reset)
            return self.describe()
        async with self.lock:
            problem = acquire_problem(self.state, request.run_id)
            if problem:  # another run got it while this one waited for the lock
                raise ApplicationError(problem, type=REJECTED, non_retryable=True)
            self.state.holder = request.run_id
            self._log("acquired", f"update run {request.run_id!r} holds the network")
            self._lease(request.execution())
            self._publish()
        return self.describe()

    @acquire.validator
    def _validate_acquire(self, request: AcquireRequest) -> None:
        problem = acquire_problem(self.state, request.run_id)
        reject([problem] if problem else [])

    @workflow.update(name=UPDATE_RELEASE)
    def release(self, request: ReleaseRequest) -> NetworkDescription:
        """The run gives the network back (a no-op for anyone else); queued operations run."""
        if self.state.holder == request.run_id:
            self._end_hold("released", f"update run {request.run_id!r} released the network")
        return self.describe()

    @workflow.update(name=UPDATE_OPERATOR_RELEASE)
    async def operator_release(self, request: OperatorReleaseRequest) -> NetworkDescription:
        """An operator frees the network from a holder that is gone; refused while it runs."""
        holder = self.state.holder
        assert holder is not None  # the validator guarantees it
        execution = self.state.holder_execution or HolderExecution(
            workflow_id=run_workflow_id(self.state.name, holder), run_id=""
        )
        end = await self._call(
            ACTIVITY_LOOK_AT_HOLDER,
            execution,
            HolderEnd,
            summary=f"look at update run {holder}",
        )
        if self.state.holder != holder:
            return self.describe()  # released (or freed) while we looked
        if not end.ended:
            raise ApplicationError(
                f"update run {holder!r} is still running ({execution.workflow_id}); its hold "
                "ends when it does: stop or terminate the run instead",
                type=REJECTED,
                non_retryable=True,
            )
        self._end_hold(
            "releasedByOperator",
            f"{request.identity} released the network held by update run {holder!r} "
            f"({end.how}): {request.reason}",
        )
        return self.describe()

    @operator_release.validator
    def _validate_operator_release(self, request: OperatorReleaseRequest) -> None:
        problem = operator_release_problem(self.state)
        reject([problem] if problem else [])

    # --- members left drained ---------------------------------------------------------------

    @workflow.update(name=UPDATE_REPORT_LEFT_DRAINED)
    def report_left_drained(self, request: ReportLeftDrainedRequest) -> NetworkDescription:
        """A run's restore left ``member`` drained: listed until restored or cleared.

        With no services, a later run drained and restored the member: its entry goes.
        """
        kept = [e for e in self.state.left_drained if e.member != request.member]
        if request.services:
            kept.append(
                LeftDrained(
                    member=request.member,
                    services=list(request.services),
                    run_id=request.run_id,
                    at=workflow.now(),
                )
            )
            self._log(
                "leftDrained",
                f"update run {request.run_id!r} could not restore {request.member}: still "
                f'service.cilium.io/shared: "false" on {", ".join(request.services)}',
                cluster=request.member,
            )
        elif len(kept) != len(self.state.left_drained):
            self._log(
                "drainedRestored",
                f"update run {request.run_id!r} drained and restored {request.member}: "
                "it is drained no more",
                cluster=request.member,
            )
        # Bounded: the oldest entries go first (the log still says what they were).
        self.state.left_drained = kept[-MAX_LEFT_DRAINED:]
        self._publish()
        return self.describe()

    @workflow.update(name=UPDATE_CLEAR_DRAINED)
    def clear_drained(self, request: ClearDrainedRequest) -> NetworkDescription:
        """An operator says ``member`` is no longer drained; recorded with who and why."""
        entry = next(e for e in self.state.left_drained if e.member == request.member)
        self.state.left_drained.remove(entry)
        self._log(
            "drainedCleared",
            f"{request.identity} cleared {request.member} (left drained by update run "
            f"{entry.run_id!r} on {', '.join(entry.services)}): {request.reason}",
            cluster=request.member,
        )
        self._publish()
        return self.describe()

    @clear_drained.validator
    def _validate_clear_drained(self, request: ClearDrainedRequest) -> None:
        listed = [e.member for e in self.state.left_drained]
        if request.member not in listed:
            reject(
                [
                    f"member: {request.member!r} is not listed as left drained on network "
                    f"{self.state.name} (listed: {', '.join(listed) or 'none'})"
                ]
            )

    # --- reads ----------------------------------------------------------------------------

    @workflow.query(name=QUERY_DESCRIBE)
    def describe(self) -> NetworkDescription:
        """Members, ids, status, holder, pending operations and the recent log."""
        return NetworkDescription.of(self.state)

    @workflow.update(name=UPDATE_SERVICES)
    async def services(self, request: ServicesRequest) -> ServicesReport:
        """Every global service of the members; flags global services in non-global namespaces."""
        found = await self._call(
            ACTIVITY_LIST_SERVICES,
            ListServicesInput(members=self.state.member_names()),
            GlobalServices,
            summary="list global services",
        )
        return services_report(self.state.name, found.services)
