"""What a member's preflight and drain read: their own cluster, and the peers only when needed.

Listing the global services over the peers reads every peer's cluster (on
Kubernetes: four lists, a configmap and an exec per running agent, per peer).
A member that serves no global service has no continuity to protect, and a
drain annotates only what its own cluster exports: neither needs the peers'
listing, nor the run's member list. These tests run the activities in an
``ActivityEnvironment`` over the simulated fleet and record each listing asked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.backends.simulated import SimulatedFleetBackend
from activities.member_steps import MemberStepActivities
from activities.roster import RosterReader
from engine.domain import run as contract
from engine.domain.fleet import parse_fleet
from engine.domain.plan import VersionPair
from engine.domain.roster import RosterRef, RunRoster, roster_digest
from engine.domain.runspec import UpgradeType
from engine.domain.services import GlobalService
from tests.backends.conftest import CHECKOUT, MEMBERS, NAMESPACE, SERVICE, FakeClock, fleet_document

TARGET = VersionPair(kubernetes_version="1.33", cilium_version="1.17.9")
RUN = "updaterun/prod-mesh/r1"


class _ListingRecorded(SimulatedFleetBackend):
    """The simulated fleet, recording the members of every global-service listing."""

    def __init__(self, world_dir: Path, clock: FakeClock) -> None:
        super().__init__(world_dir, clock=clock)
        self.listings: list[list[str]] = []

    async def list_global_services(self, members: Sequence[str]) -> list[GlobalService]:
        self.listings.append(list(members))
        return await super().list_global_services(members)


class _Roster:
    """The run's member list, counting how often a step had to read it."""

    def __init__(self) -> None:
        self.reads = 0
        self.ref = RosterRef(
            workflow_id=RUN, run_instance="i1", size=len(MEMBERS), digest=roster_digest(MEMBERS)
        )

    async def __call__(self, ref: RosterRef) -> RunRoster:
        self.reads += 1
        return RunRoster(run_instance=ref.run_instance, members=list(MEMBERS))


@pytest.fixture
def roster() -> _Roster:
    return _Roster()


def fleet(
    world_dir: Path, clock: FakeClock, endpoints: dict[str, int], minimum: int
) -> _ListingRecorded:
    """The three members; shop/checkout global in all, with these ready endpoints each."""
    backend = _ListingRecorded(world_dir, clock)
    document = fleet_document(
        globalServices=[
            {
                "namespace": NAMESPACE,
                "name": SERVICE,
                "clusters": endpoints,
                "minReadyEndpoints": minimum,
            }
        ]
    )
    backend.load(parse_fleet(document), reset=True)
    return backend


def steps(backend: SimulatedFleetBackend, roster: _Roster) -> MemberStepActivities:
    # No Temporal client: the roster is read through ``roster`` alone.
    return MemberStepActivities(backend, cast(Client, None), roster=RosterReader(roster))


def member(
    name: str, roster: _Roster, *, in_flight: Sequence[str] = ()
) -> contract.MemberUpdateInput:
    return contract.MemberUpdateInput(
        run_id="r1",
        network="prod-mesh",
        member=name,
        attempt=1,
        run_instance="i1",
        upgrade_type=UpgradeType.FULL,
        hops=[VersionPair(kubernetes_version="1.33.6", cilium_version="1.17.9")],
        target=TARGET,
        roster=roster.ref,
        in_flight=list(in_flight),
        mesh_ready_timeout=dt.timedelta(minutes=5),
    )


async def preflight(
    backend: SimulatedFleetBackend, roster: _Roster, *, in_flight: Sequence[str] = ()
) -> contract.PreflightResult:
    """alpha's preflight, as its activity runs it."""
    return await ActivityEnvironment().run(
        steps(backend, roster).preflight_member, member("alpha", roster, in_flight=in_flight)
    )


async def test_preflight_of_a_member_serving_no_global_service_reads_only_its_own_cluster(
    world_dir: Path, clock: FakeClock, roster: _Roster
) -> None:
    backend = fleet(world_dir, clock, {"alpha": 0, "bravo": 3, "charlie": 3}, minimum=2)
    result = await preflight(backend, roster)
    assert result.outcome is contract.PreflightOutcome.PROCEED
    assert backend.listings == [["alpha"]]
    assert roster.reads == 0


async def test_preflight_of_a_member_serving_one_reads_its_peers_and_defers_when_too_few_remain(
    world_dir: Path, clock: FakeClock, roster: _Roster
) -> None:
    backend = fleet(world_dir, clock, {"alpha": 3, "bravo": 3, "charlie": 3}, minimum=4)
    result = await preflight(backend, roster, in_flight=["bravo"])
    assert result.outcome is contract.PreflightOutcome.DEFERRED
    assert result.message is not None
    assert f"continuity: {CHECKOUT} would keep 3 ready endpoints elsewhere" in result.message
    assert backend.listings == [["alpha"], MEMBERS]
    assert roster.reads == 1


async def test_preflight_of_a_member_serving_one_proceeds_when_enough_remain_elsewhere(
    world_dir: Path, clock: FakeClock, roster: _Roster
) -> None:
    backend = fleet(world_dir, clock, {"alpha": 3, "bravo": 3, "charlie": 3}, minimum=4)
    result = await preflight(backend, roster)
    assert result.outcome is contract.PreflightOutcome.PROCEED
    assert backend.listings == [["alpha"], MEMBERS]


async def test_a_drain_annotates_what_its_own_cluster_exports_without_reading_the_peers(
    world_dir: Path, clock: FakeClock, roster: _Roster
) -> None:
    backend = fleet(world_dir, clock, {"alpha": 3, "bravo": 3, "charlie": 3}, minimum=2)
    record = await ActivityEnvironment().run(
        steps(backend, roster).annotate_drain, member("alpha", roster)
    )
    assert [(c.cluster, f"{c.namespace}/{c.name}") for c in record.changes] == [("alpha", CHECKOUT)]
    assert record.ready_before == {CHECKOUT: 3}
    assert backend.listings == [["alpha"]]
    assert roster.reads == 0


async def test_a_verify_reads_its_own_endpoints_from_its_own_cluster(
    world_dir: Path, clock: FakeClock, roster: _Roster
) -> None:
    backend = fleet(world_dir, clock, {"alpha": 3, "bravo": 3, "charlie": 3}, minimum=2)
    drained = contract.DrainRecord(member="alpha", changes=[], ready_before={CHECKOUT: 3})
    await ActivityEnvironment().run(
        steps(backend, roster).verify_member,
        contract.VerifyRequest(member=member("alpha", roster), drain=drained),
    )
    assert backend.listings == [["alpha"]]
