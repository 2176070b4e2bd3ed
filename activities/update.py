"""Activities of an update run: the six member steps and the run's health gates.

Each activity is thin: it asks the fleet backend, waits with heartbeats where
something takes time, and lets :func:`activities.common.classified` decide
whether a failure is worth retrying. Every mutation carries an idempotency
key derived from run, member, attempt and step, so a retried or replayed
activity never upgrades or drains anything twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import drain
from activities.common import NON_RETRYABLE, WaitTimedOut, classified, wait_for
from activities.planning import compute_plan
from activities.roster import RosterReader, query_run
from engine.domain import run as contract
from engine.domain.backend import (
    FleetBackend,
    GlobalService,
    NotReadyLink,
    OperationProgress,
    OperationState,
)
from engine.domain.errors import NotFoundError
from engine.domain.member import Member
from engine.domain.network import (
    UPDATE_ACQUIRE,
    UPDATE_RELEASE,
    UPDATE_REPORT_LEFT_DRAINED,
    AcquireRequest,
    NetworkDescription,
    ReleaseRequest,
    ReportLeftDrainedRequest,
    network_workflow_id,
)
from engine.domain.plan import VersionPair
from engine.domain.versions import Version

log = structlog.get_logger(__name__)


def step_key(member: contract.MemberUpdateInput, step: str) -> str:
    """The idempotency key of one step of one attempt of one member in one run."""
    run = f"{member.run_id}@{member.run_instance}" if member.run_instance else member.run_id
    return f"{run}/{member.member}/a{member.attempt}/{step}"


def _serves(service: GlobalService, cluster: str) -> bool:
    state = service.per_cluster.get(cluster)
    return state is not None and state.is_global and state.shared and state.ready_endpoints > 0


def _ready_elsewhere(service: GlobalService, gone: set[str]) -> int:
    return sum(
        state.ready_endpoints
        for cluster, state in service.per_cluster.items()
        if cluster not in gone and state.is_global and state.shared
    )


class UpdateActivities:
    """The activities of update runs, bound to a fleet backend and a Temporal client."""

    def __init__(self, backend: FleetBackend, client: Client) -> None:
        self._backend = backend
        self._client = client
        #: The network's member list each member step reads (once per run and worker).
        self._roster = RosterReader(query_run(client))

    # --- the run's own activities ---------------------------------------------------------

    @activity.defn(name=contract.ACQUIRE_NETWORK)
    async def acquire_network(self, lease: contract.NetworkLease) -> contract.LeasedNetwork:
        """Take the network for this run (the network workflow records the holder)."""
        async with classified():
            handle = self._client.get_workflow_handle(network_workflow_id(lease.network))
            try:
                # The run's own execution: the network watches it, and the hold ends with it.
                holder = activity.info()
                described: NetworkDescription = await handle.execute_update(
                    UPDATE_ACQUIRE,
                    AcquireRequest(
                        run_id=lease.run_id,
                        holder_workflow_id=holder.workflow_id,
                        holder_run_id=holder.workflow_run_id,
                    ),
                    result_type=NetworkDescription,
                )
            except Exception as error:
                raise ApplicationError(
                    f"cannot take network {lease.network!r}: {_cause(error)}",
                    type=NON_RETRYABLE,
                    non_retryable=True,
                ) from error
            return contract.LeasedNetwork(
                network=lease.network,
                members=[m.name for m in described.members],
                left_drained=[e.member for e in described.left_drained],
            )

    @activity.defn(name=contract.RELEASE_NETWORK)
    async def release_network(self, lease: contract.NetworkLease) -> None:
        """Give the network back, so queued membership changes can run."""
        async with classified():
            handle = self._client.get_workflow_handle(network_workflow_id(lease.network))
            await handle.execute_update(
                UPDATE_RELEASE, ReleaseRequest(run_id=lease.run_id), result_type=NetworkDescription
            )

    @activity.defn(name=contract.REPORT_LEFT_DRAINED)
    async def report_left_drained(self, report: contract.LeftDrainedReport) -> None:
        """Tell the network a member's restore left it drained, or (no services) restored it."""
        async with classified():
            log.warning(
                "run.left_drained_reported" if report.services else "run.restored_reported",
                network=report.network,
                run_id=report.run_id,
                member=report.member,
                services=report.services,
            )
            handle = self._client.get_workflow_handle(network_workflow_id(report.network))
            await handle.execute_update(
                UPDATE_REPORT_LEFT_DRAINED,
                ReportLeftDrainedRequest(
                    run_id=report.run_id, member=report.member, services=report.services
                ),
                result_type=NetworkDescription,
            )

    @activity.defn(name=contract.DESCRIBE_MEMBERS)
    async def describe_members(self, request: contract.DescribeMembersRequest) -> list[Member]:
        """Read each member as the planner needs it."""
        async with classified():
            found = []
            for name in request.members:
                described = await self._backend.describe_member(name)
                found.append(
                    Member(
                        name=described.name,
                        labels=described.labels,
                        update_group=described.update_group,
                        kubernetes_version=described.kubernetes_version,
                        cilium_version=described.cilium_version,
                        cluster_id=described.cluster_id,
                        pod_cidrs=described.pod_cidrs,
                        maintenance_window=described.maintenance_window,
                    )
                )
            return found

    @activity.defn(name=contract.CHECK_MESH_HEALTH)
    async def check_mesh_health(
        self, request: contract.MeshHealthRequest
    ) -> contract.MeshHealthResult:
        """The built-in mesh gate: every member sees every other ready (waiting up to timeout)."""
        async with classified():
            last: list[NotReadyLink] = []

            async def healthy() -> bool | None:
                nonlocal last
                last = await self._backend.not_ready_links(request.members)
                return True if not last else None

            try:
                await wait_for(
                    healthy,
                    timeout=request.timeout,
                    interval=dt.timedelta(seconds=1),
                    describe=lambda: "a healthy mesh",
                )
            except WaitTimedOut:
                if not last:
                    raise  # never read: the timeout says why (its last problem)
                return contract.MeshHealthResult(healthy=False, not_ready=last)
            return contract.MeshHealthResult(healthy=True)

    @activity.defn(name=contract.SERVICE_ENDPOINTS)
    async def service_endpoints(
        self, request: contract.ServiceEndpointsRequest
    ) -> contract.ServiceEndpointsResult:
        """Ready endpoints per global service; with a baseline, wait until it is reached."""
        async with classified():
            ready: dict[str, int] = {}
            below: list[str] = []

            async def reached() -> bool | None:
                nonlocal ready, below
                services = await self._backend.list_global_services(request.members)
                # A drained copy (shared: "false") serves no peer: only shared copies count.
                ready = {
                    s.key: sum(
                        c.ready_endpoints
                        for c in s.per_cluster.values()
                        if c.is_global and c.shared
                    )
                    for s in services
                }
                baseline = request.baseline or {}
                below = sorted(k for k, n in baseline.items() if ready.get(k, 0) < n)
                return True if not below else None

            try:
                await wait_for(
                    reached,
                    timeout=request.timeout,
                    interval=dt.timedelta(seconds=1),
                    describe=lambda: "global services back to their baseline endpoints",
                )
            except WaitTimedOut:
                if not below:
                    raise  # never read: the timeout says why (its last problem)
            return contract.ServiceEndpointsResult(ready=ready, below_baseline=below)

    # --- one member's six steps -----------------------------------------------------------

    @activity.defn(name=contract.PREFLIGHT)
    async def preflight_member(
        self, member: contract.MemberUpdateInput
    ) -> contract.PreflightResult:
        """Healthy? Already there? Version path allowed? Would continuity hold without it?"""
        async with classified():
            described = await self._backend.describe_member(member.member)
            current = VersionPair(
                kubernetes_version=described.kubernetes_version,
                cilium_version=described.cilium_version,
            )
            if not described.api_available or not described.healthy:
                return contract.PreflightResult(
                    outcome=contract.PreflightOutcome.DEFERRED,
                    message=f"cluster not healthy: {described.reason or 'API unavailable'}",
                    current=current,
                )
            have = Version.parse(described.kubernetes_version)
            want = Version.parse(member.target.kubernetes_version)
            cilium_there = Version.parse(described.cilium_version) >= Version.parse(
                member.target.cilium_version
            )
            same_minor = have.minor_version == want.minor_version
            if same_minor and (want.patch is None or have >= want) and cilium_there:
                return contract.PreflightResult(
                    outcome=contract.PreflightOutcome.AT_TARGET,
                    message="already at the target",
                    current=current,
                )
            problem = await self._backend.target_problem(
                member.member, member.target.kubernetes_version, member.target.cilium_version
            )
            if problem is not None:
                return contract.PreflightResult(
                    outcome=contract.PreflightOutcome.REFUSED, message=problem, current=current
                )
            if have > want:
                return contract.PreflightResult(
                    outcome=contract.PreflightOutcome.REFUSED,
                    message=f"runs {have}, above the target {want}: control planes never move down",
                    current=current,
                )
            gone = {member.member, *member.in_flight}
            peers = await self._roster.members(member)
            services = await self._backend.list_global_services(peers)
            for service in services:
                if not _serves(service, member.member):
                    continue
                minimum = (
                    service.min_ready_endpoints
                    if service.min_ready_endpoints is not None
                    else member.min_ready_endpoints
                )
                left = _ready_elsewhere(service, gone)
                if left < minimum:
                    busy = sorted(set(member.in_flight) & set(service.per_cluster))
                    return contract.PreflightResult(
                        outcome=contract.PreflightOutcome.DEFERRED,
                        message=(
                            f"continuity: {service.key} would keep {left} ready endpoints "
                            f"elsewhere, below its minimum of {minimum}"
                            + (f" while {', '.join(busy)} update" if busy else "")
                        ),
                        current=current,
                    )
            return contract.PreflightResult(
                outcome=contract.PreflightOutcome.PROCEED, current=current
            )

    @activity.defn(name=contract.DRAIN_ANNOTATE)
    async def annotate_drain(self, member: contract.MemberUpdateInput) -> contract.DrainRecord:
        """Stop exporting its backends (``shared: "false"``) and return the record at once.

        Nothing here waits: the workflow holds the record (the exact previous
        annotations) before the wait for the peers (:meth:`wait_drained`) can time out.
        """
        async with classified():
            drained = await drain.annotate(
                self._backend,
                member.member,
                await self._roster.members(member),
                step_key(member, "drain"),
            )
            log.info("member.drained", member=member.member, services=len(drained.changes))
            return contract.DrainRecord(
                member=member.member, changes=drained.changes, ready_before=drained.ready_before
            )

    @activity.defn(name=contract.DRAIN_WAIT)
    async def wait_drained(self, request: contract.DrainWaitRequest) -> None:
        """Wait until no peer routes to the services the drain annotated."""
        async with classified():
            member = request.member
            await drain.wait_unrouted(
                self._backend,
                member.member,
                await self._roster.members(member),
                [f"{c.namespace}/{c.name}" for c in request.drain.changes],
                timeout=member.timings.drain_timeout,
                interval=member.timings.poll_interval,
            )

    @activity.defn(name=contract.DRAIN)
    async def drain_member(self, member: contract.MemberUpdateInput) -> contract.DrainRecord:
        """Annotate and wait in one activity (member workflows from before the
        ``drain-record-first`` patch): if the wait fails, it restores before failing."""
        async with classified():
            drained = await drain.drain_and_wait(
                self._backend,
                member.member,
                await self._roster.members(member),
                step_key(member, "drain"),
                timeout=member.timings.drain_timeout,
                interval=member.timings.poll_interval,
            )
            log.info("member.drained", member=member.member, services=len(drained.changes))
            return contract.DrainRecord(
                member=member.member, changes=drained.changes, ready_before=drained.ready_before
            )

    @activity.defn(name=contract.UPGRADE_CONTROL_PLANE)
    async def upgrade_control_plane(self, request: contract.HopRequest) -> OperationProgress:
        """Upgrade the control plane one hop and follow it to the end (heartbeating)."""
        return await self._follow(
            request,
            kind="controlPlane",
            version=request.hop.kubernetes_version,
            timeout=request.member.timings.control_plane_timeout,
        )

    @activity.defn(name=contract.UPGRADE_CILIUM)
    async def upgrade_cilium(self, request: contract.HopRequest) -> OperationProgress:
        """Upgrade bundled Cilium (agent, operator, clustermesh-apiserver); wait for rollout."""
        return await self._follow(
            request,
            kind="cilium",
            version=request.hop.cilium_version,
            timeout=request.member.timings.cilium_timeout,
        )

    async def _follow(
        self, request: contract.HopRequest, *, kind: str, version: str, timeout: dt.timedelta
    ) -> OperationProgress:
        async with classified():
            member = request.member
            key = step_key(member, f"hop{request.hop_index}/{kind}/{version}")
            try:
                progress = await self._backend.get_operation(member.member, key)
            except NotFoundError:
                start = (
                    self._backend.start_control_plane_upgrade
                    if kind == "controlPlane"
                    else self._backend.start_cilium_upgrade
                )
                progress = await start(member.member, version, idempotency_key=key)
            log.info("member.upgrade_following", member=member.member, kind=kind, version=version)
            last = progress

            async def finished() -> OperationProgress | None:
                nonlocal last
                last = current = await self._backend.get_operation(member.member, key)
                if current.done:
                    return current  # no heartbeat: the activity is about to complete anyway
                if activity.in_activity():
                    activity.heartbeat(f"{current.phase} {current.percent}%")
                return None

            def stuck_at() -> str:
                """What the timeout message names: the upgrade, and where it was last seen."""
                seen = last.phase + (f"; {last.message}" if last.message else "")
                return f"the {kind} upgrade of {member.member} to {version} (last seen: {seen})"

            progress = (
                progress
                if progress.done
                else await wait_for(
                    finished,
                    timeout=timeout,
                    interval=member.timings.poll_interval,
                    describe=stuck_at,
                )
            )
            if progress.state is OperationState.FAILED:
                raise ApplicationError(
                    f"{kind} upgrade of {member.member} to {version} failed: "
                    f"{progress.message or 'no reason given'}",
                    type=NON_RETRYABLE,
                    non_retryable=True,
                )
            return progress

    @activity.defn(name=contract.VERIFY)
    async def verify_member(self, request: contract.VerifyRequest) -> None:
        """The member sees every peer ready, every peer sees it ready, its endpoints are back."""
        async with classified():
            member = request.member
            problems: list[str] = []
            peers = await self._roster.members(member)

            async def verified() -> bool | None:
                problems.clear()
                links = await self._backend.not_ready_links(peers, focus=member.member)
                problems.extend(f"{link.viewer} -> {link.peer}: {link.reason}" for link in links)
                if not any(request.drain.ready_before.values()):
                    return True if not problems else None  # no endpoints of its own to wait for
                services = await self._backend.list_global_services(peers)
                for service in services:
                    before = request.drain.ready_before.get(service.key)
                    state = service.per_cluster.get(member.member)
                    if before and (state is None or state.ready_endpoints < before):
                        have = 0 if state is None else state.ready_endpoints
                        problems.append(f"{service.key}: {have}/{before} endpoints ready")
                return True if not problems else None

            await wait_for(
                verified,
                timeout=member.mesh_ready_timeout,
                interval=member.timings.poll_interval,
                describe=lambda: f"{member.member} to be ready in the mesh ({'; '.join(problems)})",
            )

    @activity.defn(name=contract.RESTORE_ANNOTATIONS)
    async def restore_annotations(self, request: contract.RestoreRequest) -> contract.RestoreResult:
        """Put back exactly the annotations the drain changed, past services that vanished.

        Fails (retryably while the cluster is unreachable) naming the services it could
        not put back; the workflow reports the member left drained when retries run out.
        """
        async with classified():
            member = request.member
            restored = await drain.restore(
                self._backend, request.drain.changes, step_key(member, "restore")
            )
            log.info(
                "member.restored",
                member=member.member,
                services=restored.restored,
                vanished=restored.vanished,
            )
            return contract.RestoreResult(restored=restored.restored, vanished=restored.vanished)

    @activity.defn(name=contract.RESTORE_WAIT)
    async def wait_restored(self, request: contract.RestoreRequest) -> None:
        """Wait until the peers route again to the member's services that have ready backends."""
        async with classified():
            member = request.member
            await drain.wait_routed(
                self._backend,
                member.member,
                await self._roster.members(member),
                request.drain.ready_before,
                timeout=member.timings.drain_timeout,
                interval=member.timings.poll_interval,
            )

    @activity.defn(name=contract.RESTORE)
    async def restore_member(self, request: contract.RestoreRequest) -> None:
        """Restore and wait in one activity (member workflows from before the
        ``drain-record-first`` patch)."""
        await self.restore_annotations(request)
        await self.wait_restored(request)

    def all(self) -> Sequence[Callable[..., Any]]:
        """Every activity of this class, for the worker."""
        return [
            self.acquire_network,
            self.release_network,
            self.report_left_drained,
            self.describe_members,
            compute_plan,
            self.check_mesh_health,
            self.service_endpoints,
            self.preflight_member,
            self.annotate_drain,
            self.wait_drained,
            self.drain_member,
            self.upgrade_control_plane,
            self.upgrade_cilium,
            self.verify_member,
            self.restore_annotations,
            self.wait_restored,
            self.restore_member,
        ]


def _cause(error: BaseException) -> str:
    """The innermost message of a Temporal error chain (an update's rejection reason)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)
