"""Activities of an update run itself: its network lease, its members and its built-in gates.

The run workflow (:mod:`workflows.update_run`) calls these; a member's own steps
are in :mod:`activities.member_steps`. Each activity is thin: it asks the fleet
backend or the network workflow, waits with heartbeats where something takes
time, and lets :func:`activities.common.classified` decide whether a failure is
worth retrying.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.common import WaitTimedOut, classified, wait_for
from activities.planning import compute_plan
from engine.domain import run as contract
from engine.domain.backend import FleetBackend
from engine.domain.errors import Retry
from engine.domain.failures import failure_text
from engine.domain.member import Member
from engine.domain.mesh import NotReadyLink
from engine.domain.network import (
    UPDATE_ACQUIRE,
    UPDATE_RELEASE,
    UPDATE_REPORT_LEFT_DRAINED,
    NetworkDescription,
    network_workflow_id,
)
from engine.domain.network_requests import AcquireRequest, ReleaseRequest, ReportLeftDrainedRequest

log = structlog.get_logger(__name__)


class RunStepActivities:
    """The update run's own activities, bound to a fleet backend and a Temporal client."""

    def __init__(self, backend: FleetBackend, client: Client) -> None:
        self._backend = backend
        self._client = client

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
                    f"cannot take network {lease.network!r}: {failure_text(error)}",
                    type=Retry.NON_RETRYABLE.value,
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

    def all(self) -> Sequence[Callable[..., Any]]:
        """Every activity of the run (and the planner it calls), for the worker."""
        return [
            self.acquire_network,
            self.release_network,
            self.report_left_drained,
            self.describe_members,
            compute_plan,
            self.check_mesh_health,
            self.service_endpoints,
        ]
