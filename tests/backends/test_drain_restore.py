"""The drain/restore pair on the simulated backend and in the activities that share it.

A drain records the exact annotations from before the *first* drain, whatever
key a retry uses; a restore puts them back exactly, continues past services
that vanished, and the endpoint baseline counts only copies that are shared.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from activities.member_steps import MemberStepActivities
from activities.network import NetworkActivities
from activities.run_steps import RunStepActivities
from engine.domain.backend import ClusterUnavailableError
from engine.domain.errors import NotFoundError
from engine.domain.network_activities import DrainServicesInput
from engine.domain.plan import VersionPair
from engine.domain.run import (
    DrainRecord,
    MemberUpdateInput,
    RestoreRequest,
    RunTimings,
    ServiceEndpointsRequest,
)
from engine.domain.runspec import UpgradeType
from engine.domain.services import AnnotationChange
from tests.backends.conftest import (
    CHECKOUT,
    MEMBERS,
    NAMESPACE,
    SERVICE,
    SHARED,
    FakeClock,
    LoadWorld,
)
from tests.polling import eventually

ORIGINAL = {"service.cilium.io/global": "true"}


def annotations(backend: SimulatedFleetBackend, cluster: str) -> dict[str, str]:
    return dict(backend.world().clusters[cluster].service_annotations[CHECKOUT])


def member_input(cluster: str = "alpha", attempt: int = 1) -> MemberUpdateInput:
    target = VersionPair(kubernetes_version="1.33.0", cilium_version="1.18.0")
    return MemberUpdateInput(
        run_id="r1",
        network="prod-mesh",
        member=cluster,
        attempt=attempt,
        upgrade_type=UpgradeType.FULL,
        hops=[target],
        target=target,
        network_members=list(MEMBERS),
        mesh_ready_timeout=dt.timedelta(seconds=1),
        timings=RunTimings(poll_interval=dt.timedelta(milliseconds=10)),
    )


async def test_a_drain_retried_under_a_new_key_records_the_value_from_before_the_first(
    backend: SimulatedFleetBackend,
) -> None:
    """The second drain (a retried member: a new attempt key) reports ``shared`` absent,
    as it was before the first drain, never ``"false"``."""
    first = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="r1/alpha/a1/drain"
    )
    again = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="r1/alpha/a2/drain"
    )
    assert first.previous == {SHARED: None}
    assert again.previous == {SHARED: None}


async def test_a_restore_after_two_drains_puts_back_exactly_the_annotations_from_before(
    backend: SimulatedFleetBackend,
) -> None:
    """Restoring what the second drain reported leaves the service as it was at the start."""
    await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="a1/drain"
    )
    again = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="a2/drain"
    )
    await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, again.previous, idempotency_key="a2/restore"
    )
    assert annotations(backend, "alpha") == ORIGINAL
    restored = backend.audit(event=AuditEvent.SERVICE_RESTORED, cluster="alpha")
    assert len(restored) == 1


async def test_the_restore_continues_past_a_service_that_vanished_and_names_it(
    backend: SimulatedFleetBackend, client: Client
) -> None:
    """A drained service deleted meanwhile is reported as vanished; the others are restored."""
    drained = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="a1/drain"
    )
    gone = AnnotationChange(
        cluster="alpha",
        namespace=NAMESPACE,
        name="deleted-meanwhile",
        previous={SHARED: None},
        current={SHARED: "false"},
    )
    record = DrainRecord(member="alpha", changes=[gone, drained], ready_before={CHECKOUT: 3})
    activities = MemberStepActivities(backend, client)
    result = await ActivityEnvironment().run(
        activities.restore_annotations, RestoreRequest(member=member_input(), drain=record)
    )
    assert annotations(backend, "alpha") == ORIGINAL
    assert result.vanished == [f"{NAMESPACE}/deleted-meanwhile"]
    assert result.restored == [CHECKOUT]


async def test_annotating_returns_the_record_without_waiting_for_the_peers(
    backend: SimulatedFleetBackend, client: Client
) -> None:
    """The clock never moves, so no peer ever stops routing: annotating returns all the same."""
    activities = MemberStepActivities(backend, client)
    record = await ActivityEnvironment().run(activities.annotate_drain, member_input())
    assert [(c.cluster, c.name, c.previous) for c in record.changes] == [
        ("alpha", SERVICE, {SHARED: None})
    ]
    assert record.ready_before == {CHECKOUT: 3}
    assert annotations(backend, "alpha")[SHARED] == "false"


async def test_a_removal_drain_whose_wait_times_out_restores_what_it_annotated(
    backend: SimulatedFleetBackend,
) -> None:
    """Network removal's drain: peers never stop routing (the clock stands still), so the
    wait times out; before it fails, the annotations are back and the audit says so."""
    activities = NetworkActivities(backend, poll_interval=dt.timedelta(milliseconds=10))
    request = DrainServicesInput(
        cluster="alpha",
        peers=["bravo", "charlie"],
        idempotency_key="op-1/alpha/drain",
        timeout=dt.timedelta(milliseconds=50),
    )
    with pytest.raises(ApplicationError, match="peers to stop routing"):
        await ActivityEnvironment().run(activities.drain_services, request)
    assert annotations(backend, "alpha") == ORIGINAL
    assert len(backend.audit(event=AuditEvent.SERVICE_DRAINED, cluster="alpha")) == 1
    assert len(backend.audit(event=AuditEvent.SERVICE_RESTORED, cluster="alpha")) == 1


async def test_the_endpoint_baseline_counts_only_ready_endpoints_of_shared_copies(
    backend: SimulatedFleetBackend, client: Client
) -> None:
    """A drained copy (``shared: "false"``) serves no peer: its endpoints are not counted."""
    await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="a1/drain"
    )
    activities = RunStepActivities(backend, client)
    result = await ActivityEnvironment().run(
        activities.service_endpoints, ServiceEndpointsRequest(members=list(MEMBERS))
    )
    assert result.ready == {CHECKOUT: 6}


class _RestoresRefused(SimulatedFleetBackend):
    """The simulated fleet, except that putting annotations back fails (API unreachable)."""

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        if "/undo/" in idempotency_key:
            raise ClusterUnavailableError(cluster)
        return await super().set_service_annotations(
            cluster, namespace, name, changes, idempotency_key=idempotency_key
        )


async def test_a_removal_drain_that_cannot_undo_itself_says_the_cluster_is_left_drained(
    backend: SimulatedFleetBackend, world_dir: Path, clock: FakeClock
) -> None:
    """The wait times out and the undo fails too: the activity's error says LEFT DRAINED
    first, naming the cluster and the service, so the removal's failure reports it."""
    refusing = _RestoresRefused(world_dir, clock=clock)
    activities = NetworkActivities(refusing, poll_interval=dt.timedelta(milliseconds=10))
    request = DrainServicesInput(
        cluster="alpha",
        peers=["bravo", "charlie"],
        idempotency_key="op-1/alpha/drain",
        timeout=dt.timedelta(milliseconds=50),
    )
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.drain_services, request)
    assert raised.value.non_retryable
    assert raised.value.message.startswith("LEFT DRAINED: alpha is still drained")
    assert CHECKOUT in raised.value.message
    assert "peers to stop routing" in raised.value.message
    assert annotations(backend, "alpha")[SHARED] == "false"


async def test_a_removal_drain_cancelled_once_it_annotated_restores_what_it_annotated(
    backend: SimulatedFleetBackend,
) -> None:
    """The removal is cancelled once the drain's annotation landed (whether the activity is
    still finishing it or already waiting on peers that, the clock standing still, never
    stop routing): the drain puts the annotations back as it ends."""
    activities = NetworkActivities(backend, poll_interval=dt.timedelta(milliseconds=10))
    request = DrainServicesInput(
        cluster="alpha",
        peers=["bravo", "charlie"],
        idempotency_key="op-1/alpha/drain",
        timeout=dt.timedelta(hours=1),
    )
    environment = ActivityEnvironment()
    draining = asyncio.ensure_future(environment.run(activities.drain_services, request))
    await eventually(
        lambda: backend.audit(event=AuditEvent.SERVICE_DRAINED, cluster="alpha"),
        interval=0.01,
        what="alpha's service to be drained",
    )
    environment.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    assert annotations(backend, "alpha") == ORIGINAL
    assert len(backend.audit(event=AuditEvent.SERVICE_RESTORED, cluster="alpha")) == 1


class _CheckoutDeletedOnDrain(SimulatedFleetBackend):
    """The simulated fleet, except that shop/checkout is deleted once it has been listed."""

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        if name == SERVICE:
            raise NotFoundError(f"cluster {cluster!r} has no service {CHECKOUT!r}")
        return await super().set_service_annotations(
            cluster, namespace, name, changes, idempotency_key=idempotency_key
        )


async def test_annotating_skips_a_service_deleted_since_it_was_listed(
    load_world: LoadWorld, world_dir: Path, clock: FakeClock, client: Client
) -> None:
    """The drain goes on with the services that exist; the record holds only those."""
    load_world(
        globalServices=[
            {"namespace": NAMESPACE, "name": SERVICE, "clusters": dict.fromkeys(MEMBERS, 3)},
            {"namespace": NAMESPACE, "name": "cart", "clusters": dict.fromkeys(MEMBERS, 2)},
        ]
    )
    backend = _CheckoutDeletedOnDrain(world_dir, clock=clock)
    activities = MemberStepActivities(backend, client)
    record = await ActivityEnvironment().run(activities.annotate_drain, member_input())
    assert [c.name for c in record.changes] == ["cart"]
    assert record.ready_before == {f"{NAMESPACE}/cart": 2}
