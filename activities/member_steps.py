"""Activities of one member's update: the six steps of the member workflow.

Preflight, drain, upgrade (control plane, then Cilium, one hop at a time),
verify and restore, called by :mod:`workflows.member_update`. Each activity is
thin: it asks the fleet backend, waits with heartbeats where something takes
time, and lets :func:`activities.common.classified` decide whether a failure is
worth retrying. Every mutation carries an idempotency key derived from run,
member, attempt and step (:func:`step_key`), so a retried or replayed activity
never upgrades or drains anything twice.
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
from activities.common import classified, wait_for
from activities.roster import RosterReader, query_run
from engine.domain import run as contract
from engine.domain.backend import FleetBackend, OperationProgress, OperationState
from engine.domain.errors import NotFoundError, Retry
from engine.domain.plan import VersionPair
from engine.domain.services import GlobalService
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


class MemberStepActivities:
    """The steps of one member's update, bound to a fleet backend."""

    def __init__(
        self, backend: FleetBackend, client: Client, *, roster: RosterReader | None = None
    ) -> None:
        self._backend = backend
        #: The network's member list each member step reads (once per run and worker).
        self._roster = roster or RosterReader(query_run(client))

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
            return await self._continuity(member, current)

    async def _continuity(
        self, member: contract.MemberUpdateInput, current: VersionPair
    ) -> contract.PreflightResult:
        """Would every service the member serves keep its minimum without it?

        Only a member that serves a global service needs its peers' listing (every
        member's services, read from every member's cluster): most members of a large
        mesh serve none, and their preflight reads their own cluster alone.
        """
        own = await self._backend.list_global_services([member.member])
        serving = {service.key for service in own if _serves(service, member.member)}
        if not serving:
            return contract.PreflightResult(
                outcome=contract.PreflightOutcome.PROCEED, current=current
            )
        gone = {member.member, *member.in_flight}
        peers = await self._roster.members(member)
        for service in await self._backend.list_global_services(peers):
            if service.key not in serving or not _serves(service, member.member):
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
        return contract.PreflightResult(outcome=contract.PreflightOutcome.PROCEED, current=current)

    @activity.defn(name=contract.DRAIN_ANNOTATE)
    async def annotate_drain(self, member: contract.MemberUpdateInput) -> contract.DrainRecord:
        """Stop exporting its backends (``shared: "false"``) and return the record at once.

        Nothing here waits: the workflow holds the record (the exact previous
        annotations) before the wait for the peers (:meth:`wait_drained`) can time out.
        """
        async with classified():
            drained = await drain.annotate(self._backend, member.member, step_key(member, "drain"))
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
                    type=Retry.NON_RETRYABLE.value,
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
                # Its own endpoints: its own cluster's listing says (the peers' adds nothing).
                for service in await self._backend.list_global_services([member.member]):
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
        """Every step of a member's update, for the worker."""
        return [
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
