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
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from engine.domain import search_attributes
from engine.domain.durations import format_duration
from engine.domain.membership import CandidateCheck, CandidateChecks, MembershipRule
from engine.domain.names import MAX_NETWORK_MEMBERS
from engine.domain.network import (
    MAX_KEPT_RESULTS,
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
    LogEntry,
    LogSummary,
    MemberResult,
    MembershipChange,
    MembershipOutcome,
    NetworkDescription,
    NetworkInput,
    NetworkMember,
    NetworkState,
    NetworkStatus,
    OperationResult,
    PendingOperation,
)
from engine.domain.network_activities import (
    ACTIVITY_CHECK_CANDIDATES,
    ACTIVITY_CONNECT_PEERS,
    ACTIVITY_DISABLE_MESH,
    ACTIVITY_DISCONNECT_PEERS,
    ACTIVITY_DRAIN_SERVICES,
    ACTIVITY_ENABLE_MESH,
    ACTIVITY_LIST_SERVICES,
    ACTIVITY_LOOK_AT_HOLDER,
    ACTIVITY_RESTORE_SERVICES,
    ACTIVITY_WAIT_MESH_READY,
    ACTIVITY_WAIT_UNLISTED,
    ACTIVITY_WATCH_HOLDER,
    CheckCandidatesInput,
    DisableMeshInput,
    DrainedServices,
    DrainServicesInput,
    EnableMeshInput,
    EnableMeshResult,
    GlobalServices,
    HolderEnd,
    ListServicesInput,
    MemberId,
    MeshReadiness,
    PeersInput,
    RestoreServicesInput,
    WaitMeshReadyInput,
    WaitUnlistedInput,
    WatchHolderInput,
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
    queue_problem,
    remove_problems,
)
from engine.domain.run import run_workflow_id
from engine.domain.services import ServicesReport, services_report
from workflows.failures import say_code_once

T = TypeVar("T")

NETWORK_KEY = search_attributes.NETWORK

#: Error type of an update rejected by a validator (the client maps it to invalid input).
REJECTED = "MeshfleetRejected"
#: One backend call (connect, disconnect, annotate, list) must finish within this.
CALL_TIMEOUT = timedelta(minutes=2)
#: Transient failures (a cluster's API unreachable) are retried for this long in all.
RETRY_FOR = timedelta(minutes=15)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
#: Rows of the log shown in the Web UI's current details.
DETAILS_LOG_ROWS = 8
#: Patch: enable_mesh is given the cluster id the network allocated (backends write it).
PATCH_ENABLE_MESH_CLUSTER_ID = "enable-mesh-cluster-id"

#: Patch: the Degraded re-check timer (036ed40 added it without a patch; histories of
#: networks started before it have no timer where today's code would arm one).
PATCH_DEGRADED_RECHECK = "network-degraded-recheck"
#: Patch: the network continues as new at its own bound, not only when the server says.
PATCH_HISTORY_BOUND = "network-history-bound"
#: Patch: a hold whose acquire names the holder's execution is watched (the lease).
PATCH_HOLDER_LEASE = "network-holder-lease"


def _reject(problems: Sequence[str]) -> None:
    if problems:
        raise ApplicationError("; ".join(problems), type=REJECTED, non_retryable=True)


def _failure(error: BaseException) -> str:
    """The person-readable reason inside an activity failure."""
    cause = error.cause if isinstance(error, ActivityError) and error.cause else error
    return say_code_once(cause.message if isinstance(cause, ApplicationError) else str(cause))


@workflow.defn(name=NETWORK_WORKFLOW)
class NetworkWorkflow:
    """One cross-cluster network: its members, its status, its holder and its queue."""

    @workflow.init
    def __init__(self, request: NetworkInput) -> None:
        self.settings = request.settings
        self.state = request.state or NetworkState(
            name=request.name, uid=workflow.info().run_id, created_at=workflow.now()
        )
        #: Held while a membership operation runs and while a run takes the network.
        self.lock = asyncio.Lock()
        #: Results for update handlers still waiting (never persisted: continue-as-new
        #: happens only once every handler has finished).
        self.results: dict[str, OperationResult] = {}
        self.awaited: dict[str, bool] = {}
        #: Whether this run re-reads a Degraded mesh (decided once, see ``_rechecks``).
        self.rechecks: bool | None = None
        #: The task watching the holder's execution, and the execution it watches.
        self.watcher: asyncio.Task[None] | None = None
        self.watched: HolderExecution | None = None
        self.bounded = False

    # --- the main loop --------------------------------------------------------------------

    @workflow.run
    async def run(self, request: NetworkInput) -> NetworkDescription:
        """Run queued membership operations in order until deleted; continue-as-new when told."""
        if workflow.info().typed_search_attributes.get(NETWORK_KEY) != self.state.name:
            workflow.upsert_search_attributes([NETWORK_KEY.value_set(self.state.name)])
        self._publish()
        self._watch()  # a lease carried over by continue-as-new is watched again
        #: Whether this run continues as new at its own bound (histories of earlier code: no).
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
                    start_to_close_timeout=CALL_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=1),
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

    def _runnable(self) -> bool:
        return bool(self.state.pending) and self.state.holder is None and not self.lock.locked()

    def _next_runnable(self) -> bool:
        """A queued operation may start now (not while the run hands over to the next)."""
        return self._runnable() and not self._draining()

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
        _reject(join_problems(self.state, request.members) + self._queue_problems())

    @workflow.update(name=UPDATE_REMOVE)
    async def remove(self, request: RemoveRequest) -> OperationResult:
        """Remove members: drain their global services, disconnect them, wait until forgotten."""
        op = self._accept(MembershipChange.REMOVE, request.members)
        return await self._outcome(op)

    @remove.validator
    def _validate_remove(self, request: RemoveRequest) -> None:
        _reject(remove_problems(self.state, request.members) + self._queue_problems())

    @workflow.update(name=UPDATE_DELETE)
    async def delete(self, request: DeleteRequest) -> OperationResult:
        """Delete the network (with ``force``: remove every member first), then end."""
        op = self._accept(MembershipChange.DELETE, [], force=request.force)
        return await self._outcome(op)

    @delete.validator
    def _validate_delete(self, request: DeleteRequest) -> None:
        problem = delete_problem(self.state, request.force)
        _reject(([problem] if problem else []) + self._queue_problems())

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
            _reject([f"no operation {request.id!r} waits for its caller on this network"])

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
        _reject([problem] if problem else [])

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
        _reject([problem] if problem else [])

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
                    start_to_close_timeout=period + CALL_TIMEOUT,
                    heartbeat_timeout=self.settings.heartbeat_timeout,
                    retry_policy=RETRY,
                    summary=f"watch update run {holder.workflow_id} until it ends",
                )
            except ActivityError as error:  # not retryable: look again after a pause
                self._log("warning", f"watching the holder failed: {_failure(error)}")
                await workflow.sleep(CALL_TIMEOUT)
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
            _reject(
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

    # --- join -----------------------------------------------------------------------------

    async def _join(self, op: PendingOperation) -> OperationResult:
        before = (self.state.status, self.state.status_message)
        self._set_status(NetworkStatus.APPLYING)
        results: dict[str, MemberResult] = {}
        candidates: list[str] = []
        for name in op.members:
            if self.state.member(name) is not None:
                results[name] = _rejected(name, MembershipRule.MEMBERSHIP, "already a member")
            elif len(self.state.members) + len(candidates) >= MAX_NETWORK_MEMBERS:
                results[name] = _rejected(
                    name,
                    MembershipRule.MEMBER_LIMIT,
                    f"the network already has {MAX_NETWORK_MEMBERS} members",
                )
            else:
                candidates.append(name)
        accepted: list[CandidateCheck] = []
        if candidates:
            checks = await self._call(
                ACTIVITY_CHECK_CANDIDATES,
                CheckCandidatesInput(
                    network=self.state.name,
                    candidates=candidates,
                    members=[
                        MemberId(name=m.name, cluster_id=m.cluster_id) for m in self.state.members
                    ],
                ),
                CandidateChecks,
                summary=f"check {len(candidates)} candidate(s)",
            )
            for check in checks.checks:
                if check.unknown is not None:
                    results[check.cluster] = _rejected(
                        check.cluster, MembershipRule.CLUSTER_KNOWN, check.unknown
                    )
                elif not check.ok:
                    results[check.cluster] = _rejected(
                        check.cluster,
                        MembershipRule(check.failed[0].rule.value),
                        "; ".join(f"{f.rule.value}: {f.message}" for f in check.failed),
                    )
                else:
                    accepted.append(check)
        for name, result in results.items():
            self._log(
                "rejected",
                say_code_once(f"{result.rule.value if result.rule else ''}: {result.message}"),
                op,
                name,
            )

        newcomers = await self._enable_all(op, accepted, results)
        if not newcomers:
            if self.state.members:
                self._set_status(*before)  # nothing changed
            else:
                self._set_status(NetworkStatus.NOT_CONNECTED)
            return self._result(op, results)

        failure = await self._connect_newcomers(op, [m.name for m in newcomers])
        if failure is not None:
            for member in newcomers:
                results[member.name] = MemberResult(
                    cluster=member.name,
                    outcome=MembershipOutcome.FAILED,
                    cluster_id=member.cluster_id,
                    message=f"the mesh is enabled but connecting it failed: {failure}; "
                    "it is recorded as a member (remove it to clean up)",
                )
            self._set_status(NetworkStatus.FAILED, failure)
            return self._result(op, results)

        readiness = await self._settle(op)
        for member in newcomers:
            note = (
                "joined; the whole mesh reports ready"
                if readiness.ready
                else f"joined, but the mesh did not report ready within "
                f"{format_duration(self.settings.mesh_ready_timeout)}: "
                f"{len(readiness.not_ready_links)} link(s) not ready"
            )
            results[member.name] = MemberResult(
                cluster=member.name,
                outcome=MembershipOutcome.JOINED,
                cluster_id=member.cluster_id,
                message=note
                + (" (cluster id assigned by the network)" if member.cluster_id_assigned else ""),
            )
        return self._result(op, results, readiness)

    async def _enable_all(
        self,
        op: PendingOperation,
        accepted: Sequence[CandidateCheck],
        results: dict[str, MemberResult],
    ) -> list[NetworkMember]:
        """Enable the mesh on every accepted newcomer (in parallel); record those that came up."""
        # Histories recorded before the allocation was passed scheduled it without the id.
        pass_id = workflow.patched(PATCH_ENABLE_MESH_CLUSTER_ID)
        outcomes = await asyncio.gather(
            *[
                self._call(
                    ACTIVITY_ENABLE_MESH,
                    EnableMeshInput(
                        cluster=check.cluster,
                        network=self.state.name,
                        idempotency_key=self._key(op, check.cluster, "enable-mesh"),
                        timeout=self.settings.mesh_ready_timeout,
                        cluster_id=check.cluster_id if pass_id else None,
                    ),
                    EnableMeshResult,
                    waits=self.settings.mesh_ready_timeout,
                    summary=f"enable the mesh on {check.cluster}",
                )
                for check in accepted
            ],
            return_exceptions=True,
        )
        newcomers: list[NetworkMember] = []
        for check, outcome in zip(accepted, outcomes, strict=True):
            name = check.cluster
            if isinstance(outcome, BaseException):
                results[name] = MemberResult(
                    cluster=name, outcome=MembershipOutcome.FAILED, message=_failure(outcome)
                )
            elif not outcome.succeeded:
                results[name] = MemberResult(
                    cluster=name,
                    outcome=MembershipOutcome.REJECTED
                    if outcome.rule
                    else MembershipOutcome.FAILED,
                    rule=outcome.rule,
                    message=outcome.message,
                )
            else:
                assert check.cluster_id is not None  # ok() guarantees it
                member = NetworkMember(
                    name=name,
                    cluster_id=check.cluster_id,
                    cluster_id_assigned=check.cluster_id_assigned,
                    joined_at=workflow.now(),
                    operation=op.id,
                )
                self.state.members.append(member)
                newcomers.append(member)
                self._log("meshEnabled", f"cluster id {member.cluster_id}", op, name)
                continue
            self._log("failed", results[name].message or "", op, name)
        self._publish()
        return newcomers

    async def _connect_newcomers(self, op: PendingOperation, newcomers: list[str]) -> str | None:
        """Connect each newcomer to every member and every member to the newcomers."""
        everyone = self.state.member_names()
        pairs = [(n, [p for p in everyone if p != n]) for n in newcomers]
        pairs += [(m, newcomers) for m in everyone if m not in newcomers]
        failure = await self._all(
            [
                self._call(
                    ACTIVITY_CONNECT_PEERS,
                    PeersInput(
                        cluster=cluster,
                        peers=peers,
                        idempotency_key=self._key(op, cluster, "connect"),
                    ),
                    None,
                    summary=f"connect {cluster} to {len(peers)} peer(s)",
                )
                for cluster, peers in pairs
                if peers
            ]
        )
        if failure is None:
            self._log(
                "connected", f"{', '.join(newcomers)} connected with {len(everyone)} member(s)", op
            )
        return failure

    # --- remove and delete ----------------------------------------------------------------

    async def _remove(self, op: PendingOperation) -> OperationResult:
        results = await self._remove_members(op, op.members)
        readiness = (
            await self._settle(op) if self.state.status is not NetworkStatus.FAILED else None
        )
        return self._result(op, results, readiness)

    async def _remove_members(
        self, op: PendingOperation, names: Sequence[str]
    ) -> dict[str, MemberResult]:
        self._set_status(NetworkStatus.APPLYING)
        results: dict[str, MemberResult] = {}
        failed: str | None = None
        for name in names:
            if failed is not None:
                results[name] = MemberResult(
                    cluster=name,
                    outcome=MembershipOutcome.FAILED,
                    message=f"not attempted: removing {failed!r} failed first",
                )
            elif self.state.member(name) is None:
                results[name] = _rejected(name, MembershipRule.MEMBERSHIP, "not a member")
            else:
                results[name] = await self._remove_member(op, name)
                if results[name].outcome is MembershipOutcome.FAILED:
                    failed = name
        return results

    async def _remove_member(self, op: PendingOperation, name: str) -> MemberResult:
        """Drain, disconnect both ways, wait until forgotten, disable; then restore annotations."""
        peers = [m for m in self.state.member_names() if m != name]
        timeout = self.settings.mesh_ready_timeout
        try:
            drained = await self._call(
                ACTIVITY_DRAIN_SERVICES,
                DrainServicesInput(
                    cluster=name,
                    peers=peers,
                    idempotency_key=self._key(op, name, "drain"),
                    timeout=timeout,
                ),
                DrainedServices,
                waits=timeout,
                summary=f"drain the global services of {name}",
            )
            self._log("drained", f"{len(drained.changes)} global service(s) drained", op, name)
            failure = await self._all(
                [
                    self._call(
                        ACTIVITY_DISCONNECT_PEERS,
                        PeersInput(
                            cluster=cluster,
                            peers=targets,
                            idempotency_key=self._key(op, f"{name}/{cluster}", "disconnect"),
                        ),
                        None,
                        summary=f"disconnect {cluster} from {', '.join(targets)}",
                    )
                    for cluster, targets in [(name, peers), *[(p, [name]) for p in peers]]
                    if targets
                ]
            )
            if failure is not None:
                raise ApplicationError(failure)
            await self._call(
                ACTIVITY_WAIT_UNLISTED,
                WaitUnlistedInput(cluster=name, peers=peers, timeout=timeout),
                None,
                waits=timeout,
                summary=f"wait until no peer lists {name}",
            )
            await self._call(
                ACTIVITY_DISABLE_MESH,
                DisableMeshInput(cluster=name, idempotency_key=self._key(op, name, "disable-mesh")),
                None,
                summary=f"disable the mesh on {name}",
            )
        except (ActivityError, ApplicationError) as error:
            message = _failure(error)
            self._set_status(NetworkStatus.FAILED, f"removing {name!r} failed: {message}")
            self._log("failed", message, op, name)
            return MemberResult(cluster=name, outcome=MembershipOutcome.FAILED, message=message)
        member = self.state.member(name)
        self.state.members = [m for m in self.state.members if m.name != name]
        self._log("removed", "disconnected from every peer; mesh disabled", op, name)
        self._publish()
        note = "removed"
        if drained.changes:
            try:
                await self._call(
                    ACTIVITY_RESTORE_SERVICES,
                    RestoreServicesInput(
                        changes=drained.changes, idempotency_key=self._key(op, name, "restore")
                    ),
                    None,
                    summary=f"restore the service annotations of {name}",
                )
                note = "removed; its service annotations are restored"
            except ActivityError as error:
                note = f"removed, but restoring its service annotations failed: {_failure(error)}"
                self._log("warning", note, op, name)
        return MemberResult(
            cluster=name,
            outcome=MembershipOutcome.REMOVED,
            cluster_id=member.cluster_id if member else None,
            message=note,
        )

    async def _delete(self, op: PendingOperation) -> OperationResult:
        if self.state.members and not op.force:
            self.state.deleting = False
            message = (
                f"network {self.state.name!r} has {len(self.state.members)} member(s); "
                "remove them first or delete with force"
            )
            return self._result(op, {}, message=message, rule_failed=True)
        results = await self._remove_members(op, self.state.member_names())
        if self.state.members:
            self.state.deleting = False
            return self._result(
                op, results, message="delete stopped: a member could not be removed"
            )
        self.state.deleted = True
        self._set_status(NetworkStatus.NOT_CONNECTED)
        self._log("deleted", "every member removed; the network is deleted", op)
        return self._result(op, results, deleted=True)

    # --- shared steps ---------------------------------------------------------------------

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
            message = _failure(error)
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

    async def _all(self, calls: Sequence[Any]) -> str | None:
        """Run activity calls in parallel; the first failure's reason, or None."""
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failures = [_failure(o) for o in outcomes if isinstance(o, BaseException)]
        return failures[0] if failures else None

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
            timeouts: dict[str, Any] = {"start_to_close_timeout": CALL_TIMEOUT}
        else:
            timeouts = {
                "start_to_close_timeout": waits + CALL_TIMEOUT,
                "heartbeat_timeout": self.settings.heartbeat_timeout,
            }
        result: T = await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            schedule_to_close_timeout=max(RETRY_FOR, (waits or timedelta()) + RETRY_FOR),
            retry_policy=RETRY,
            summary=summary,
            **timeouts,
        )
        return result

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


def _rejected(cluster: str, rule: MembershipRule, message: str) -> MemberResult:
    return MemberResult(
        cluster=cluster, outcome=MembershipOutcome.REJECTED, rule=rule, message=message
    )
