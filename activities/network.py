"""The network lifecycle's activities: thin steps over the fleet backend.

Each activity does one thing to the fleet (check candidates, enable the mesh on
a newcomer, connect or disconnect peers, drain or restore a member's global
services, disable the mesh) or waits for one condition (the mesh ready, no peer
listing a removed member), heartbeating while it waits. Every mutation passes
the idempotency key the workflow derived (network, operation, member, step),
so an attempt retried after a worker died changes nothing twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import (
    ApplicationError,
    ApplicationErrorCategory,
    CancelledError,
    TerminatedError,
)
from temporalio.exceptions import (
    TimeoutError as WorkflowTimeoutError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities import drain
from activities.common import WaitTimedOut, classified, wait_for
from engine.domain.backend import FleetBackend, OperationProgress, OperationState
from engine.domain.errors import NotFoundError
from engine.domain.membership import (
    CandidateCheck,
    CandidateChecks,
    MemberDescription,
    MembershipRule,
    evaluate_candidates,
)
from engine.domain.mesh import NotReadyLink
from engine.domain.network import HolderExecution
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
    MeshReadiness,
    PeersInput,
    RestoreServicesInput,
    WaitMeshReadyInput,
    WaitUnlistedInput,
    WatchHolderInput,
)

log = structlog.get_logger(__name__)

#: How often waits poll the backend unless the worker is configured otherwise.
DEFAULT_POLL_INTERVAL = dt.timedelta(seconds=1)


class NetworkActivities:
    """The network workflow's activities, bound to one fleet backend."""

    def __init__(
        self, backend: FleetBackend, *, poll_interval: dt.timedelta = DEFAULT_POLL_INTERVAL
    ) -> None:
        self.backend = backend
        self.poll_interval = poll_interval

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this class, for the worker to register."""
        return [
            self.check_candidates,
            self.enable_mesh,
            self.connect_peers,
            self.wait_mesh_ready,
            self.drain_services,
            self.disconnect_peers,
            self.wait_unlisted,
            self.disable_mesh,
            self.restore_services,
            self.list_services,
        ]

    @activity.defn(name=ACTIVITY_CHECK_CANDIDATES)
    async def check_candidates(self, request: CheckCandidatesInput) -> CandidateChecks:
        """Describe candidates and members; check every rule that needs the clusters."""
        async with classified():
            members = [
                (await self.backend.describe_member(m.name), m.cluster_id) for m in request.members
            ]
            known: list[MemberDescription] = []
            unknown: dict[str, str] = {}
            for name in request.candidates:
                try:
                    known.append(await self.backend.describe_member(name))
                except NotFoundError as error:
                    unknown[name] = str(error)
            verdicts = {c.cluster: c for c in evaluate_candidates(request.network, known, members)}
            checks = [
                verdicts.get(name) or CandidateCheck(cluster=name, unknown=unknown[name])
                for name in request.candidates
            ]
            log.info(
                "network.candidates_checked",
                network=request.network,
                accepted=[c.cluster for c in checks if c.ok],
                rejected=[c.cluster for c in checks if not c.ok],
            )
            return CandidateChecks(checks=checks)

    @activity.defn(name=ACTIVITY_ENABLE_MESH)
    async def enable_mesh(self, request: EnableMeshInput) -> EnableMeshResult:
        """Deploy the clustermesh-apiserver and agent config on a newcomer; wait until done."""
        async with classified():
            claimed = await self._other_network(request.cluster, request.network)
            if claimed is not None:
                return claimed
            backend, key = self.backend, request.idempotency_key
            progress = await backend.enable_mesh(
                request.cluster,
                network=request.network,
                idempotency_key=key,
                cluster_id=request.cluster_id,
            )

            async def finished() -> OperationProgress | None:
                current = await backend.get_operation(request.cluster, key)
                return current if current.done else None

            if not progress.done:
                progress = await wait_for(
                    finished,
                    timeout=request.timeout,
                    interval=self.poll_interval,
                    describe=lambda: f"the mesh to be enabled on {request.cluster!r}",
                )
            if progress.state is OperationState.SUCCEEDED:
                log.info("network.mesh_enabled", cluster=request.cluster, network=request.network)
                return EnableMeshResult(cluster=request.cluster, succeeded=True)
            # A concurrent join into another network may have claimed the cluster first.
            claimed = await self._other_network(request.cluster, request.network)
            if claimed is not None:
                return claimed
            return EnableMeshResult(
                cluster=request.cluster,
                succeeded=False,
                message=progress.message or "enabling the mesh failed",
            )

    async def _other_network(self, cluster: str, network: str) -> EnableMeshResult | None:
        """A rejection when the cluster belongs to another network (reality, not our state)."""
        description = await self.backend.describe_member(cluster)
        if description.network is None or description.network == network:
            return None
        return EnableMeshResult(
            cluster=cluster,
            succeeded=False,
            rule=MembershipRule.SINGLE_NETWORK,
            message=f"{cluster!r} already belongs to network {description.network!r}",
        )

    @activity.defn(name=ACTIVITY_CONNECT_PEERS)
    async def connect_peers(self, request: PeersInput) -> None:
        """Configure ``cluster`` to connect to ``peers`` (one direction)."""
        async with classified():
            await self.backend.connect_peers(
                request.cluster, request.peers, idempotency_key=request.idempotency_key
            )

    @activity.defn(name=ACTIVITY_DISCONNECT_PEERS)
    async def disconnect_peers(self, request: PeersInput) -> None:
        """Remove ``peers`` from ``cluster``'s mesh configuration (one direction)."""
        async with classified():
            await self.backend.disconnect_peers(
                request.cluster, request.peers, idempotency_key=request.idempotency_key
            )

    @activity.defn(name=ACTIVITY_WAIT_MESH_READY)
    async def wait_mesh_ready(self, request: WaitMeshReadyInput) -> MeshReadiness:
        """Wait until every member sees every other ready; on timeout, report what is not."""
        async with classified():
            if not request.members:
                return MeshReadiness(ready=True)
            links: list[NotReadyLink] = []
            observed: dt.datetime | None = None

            async def healthy() -> dt.datetime | None:
                nonlocal links, observed
                links = await self.backend.not_ready_links(request.members)
                observed = dt.datetime.now(dt.UTC)
                return observed if not links else None

            try:
                ready_at = await wait_for(
                    healthy,
                    timeout=request.timeout,
                    interval=self.poll_interval,
                    describe=lambda: "the mesh to report ready",
                )
            except WaitTimedOut:
                log.warning("network.mesh_not_ready", links=len(links))
                return MeshReadiness(ready=False, not_ready_links=links, observed_at=observed)
            return MeshReadiness(ready=True, observed_at=ready_at)

    @activity.defn(name=ACTIVITY_DRAIN_SERVICES)
    async def drain_services(self, request: DrainServicesInput) -> DrainedServices:
        """Stop ``cluster`` exporting its global services; wait until no peer routes to it.

        Every service global in the cluster gets ``service.cilium.io/shared:
        "false"`` (it keeps consuming remote backends but exports none). The
        changes carry the annotations from before, so a retry returns the same;
        if the wait fails, the annotations are put back before the activity fails.
        """
        async with classified():
            # The drain/restore pair shared with member updates: a wait that fails
            # restores what it annotated before the activity fails.
            drained = await drain.drain_and_wait(
                self.backend,
                request.cluster,
                [request.cluster, *request.peers],
                request.idempotency_key,
                timeout=request.timeout,
                interval=self.poll_interval,
            )
            log.info("network.services_drained", cluster=request.cluster, services=drained.services)
            return DrainedServices(changes=drained.changes)

    @activity.defn(name=ACTIVITY_WAIT_UNLISTED)
    async def wait_unlisted(self, request: WaitUnlistedInput) -> None:
        """Wait until no peer's configuration or agents list ``cluster`` any more."""
        async with classified():
            if not request.peers:
                return

            async def unlisted() -> bool | None:
                for peer in request.peers:
                    description = await self.backend.describe_member(peer)
                    if request.cluster in description.mesh_peers:
                        return None
                health = await self.backend.mesh_health(request.peers)
                if any(view.remote(request.cluster) is not None for view in health.members):
                    return None
                return True

            await wait_for(
                unlisted,
                timeout=request.timeout,
                interval=self.poll_interval,
                describe=lambda: f"every peer to forget {request.cluster!r}",
            )

    @activity.defn(name=ACTIVITY_DISABLE_MESH)
    async def disable_mesh(self, request: DisableMeshInput) -> None:
        """Remove the mesh components and the network record from a former member."""
        async with classified():
            await self.backend.disable_mesh(
                request.cluster, idempotency_key=request.idempotency_key
            )

    @activity.defn(name=ACTIVITY_RESTORE_SERVICES)
    async def restore_services(self, request: RestoreServicesInput) -> None:
        """Set back exactly the annotations a drain changed (past services that vanished)."""
        async with classified():
            await drain.restore(self.backend, request.changes, request.idempotency_key)

    @activity.defn(name=ACTIVITY_LIST_SERVICES)
    async def list_services(self, request: ListServicesInput) -> GlobalServices:
        """The members' global services, with per-cluster state and routing views."""
        async with classified():
            if not request.members:
                return GlobalServices()
            return GlobalServices(services=await self.backend.list_global_services(request.members))


#: How often a watch heartbeats when its heartbeat timeout does not say.
DEFAULT_WATCH_HEARTBEAT = dt.timedelta(seconds=5)


def _how(error: WorkflowFailureError) -> str:
    """How a holder's execution closed, in one word, from its failure."""
    cause = error.cause
    if isinstance(cause, TerminatedError):
        return f"terminated ({cause.message})" if cause.message else "terminated"
    if isinstance(cause, CancelledError):
        return "canceled"
    if isinstance(cause, WorkflowTimeoutError):
        return "timed out"
    message = getattr(cause, "message", None) or str(cause)
    return f"failed ({message})" if message else "failed"


class HolderActivities:
    """Watching the execution that holds a network: the hold is a lease on its life."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this class, for the worker to register."""
        return [self.watch_holder, self.look_at_holder]

    @activity.defn(name=ACTIVITY_LOOK_AT_HOLDER)
    async def look_at_holder(self, holder: HolderExecution) -> HolderEnd:
        """Whether the holder's execution chain still runs, from one look (no wait)."""
        async with classified():
            try:
                latest = await self.client.get_workflow_handle(holder.workflow_id).describe()
                chain = latest.raw_description.workflow_execution_info.first_run_id
                if holder.run_id:
                    held = self.client.get_workflow_handle(holder.workflow_id, run_id=holder.run_id)
                    described = await held.describe()
                    same = described.raw_description.workflow_execution_info.first_run_id == chain
                else:  # a hold taken by earlier code: the workflow id is all there is
                    same = True
            except RPCError as error:
                if error.status is RPCStatusCode.NOT_FOUND:
                    return HolderEnd(ended=True, how="not found")
                raise
            if same and latest.status is WorkflowExecutionStatus.RUNNING:
                return HolderEnd(ended=False, how="running")
            status = latest.status.name.lower().replace("_", " ") if latest.status else "closed"
            return HolderEnd(ended=True, how=status if same else "replaced by a new run")

    @activity.defn(name=ACTIVITY_WATCH_HOLDER)
    async def watch_holder(self, request: WatchHolderInput) -> HolderEnd:
        """Wait, heartbeating, until the holder's execution chain closes or ``period`` passes.

        Continue-as-new is followed, and so is a reset (the chain goes on in a new
        run). Completed, failed, terminated, canceled, timed out, or gone: ended.
        """
        timeout = activity.info().heartbeat_timeout
        every = timeout / 3 if timeout else DEFAULT_WATCH_HEARTBEAT

        async def heartbeat() -> None:
            while True:
                activity.heartbeat()
                await asyncio.sleep(every.total_seconds())

        beating = asyncio.create_task(heartbeat())
        watching = asyncio.ensure_future(
            asyncio.wait_for(self._closed(request.holder), request.period.total_seconds())
        )
        shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
        try:
            # A worker shutting down gives a watch back at once (it is retried on a live
            # worker) instead of holding the shutdown for its whole grace period.
            await asyncio.wait({watching, shutdown}, return_when=asyncio.FIRST_COMPLETED)
            if not watching.done():
                # Benign: the SDK logs it at debug level, without a traceback, and counts
                # no failure. Every network's watch ends so at every worker shutdown.
                raise ApplicationError(
                    "the worker is shutting down; the watch goes on elsewhere",
                    category=ApplicationErrorCategory.BENIGN,
                )
            async with classified():
                try:
                    ended = watching.result()
                except TimeoutError:
                    return HolderEnd(ended=False)
        finally:
            beating.cancel()
            watching.cancel()
            shutdown.cancel()
        log.info(
            "network.holder_ended",
            workflow_id=request.holder.workflow_id,
            run_id=request.holder.run_id,
            how=ended.how,
        )
        return ended

    async def _closed(self, holder: HolderExecution) -> HolderEnd:
        run_id = holder.run_id
        first_run_id: str | None = None
        while True:
            handle = self.client.get_workflow_handle(holder.workflow_id, run_id=run_id)
            try:
                if first_run_id is None:
                    described = await handle.describe()
                    first_run_id = described.raw_description.workflow_execution_info.first_run_id
                await handle.result(follow_runs=True)
                how = "completed"
            except WorkflowFailureError as error:
                how = _how(error)
            except RPCError as error:
                if error.status is RPCStatusCode.NOT_FOUND:
                    return HolderEnd(ended=True, how="not found")
                raise
            successor = await self._reset_successor(holder.workflow_id, first_run_id)
            if successor is None:
                return HolderEnd(ended=True, how=how)
            run_id = successor

    async def _reset_successor(self, workflow_id: str, first_run_id: str | None) -> str | None:
        """The running run that continues the same chain (after a reset), if any."""
        try:
            latest = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        info = latest.raw_description.workflow_execution_info
        if latest.status is WorkflowExecutionStatus.RUNNING and info.first_run_id == first_run_id:
            return latest.run_id
        return None
