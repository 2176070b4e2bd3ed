"""Members' inputs name the run's member list instead of copying it (issue 19).

A run hands each member a reference to the network's member list (the run, the
list's size and digest); the member's steps that look at peers read the list
from the run once per worker and check it against the reference.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities.roster import RosterMismatchError, RosterReader, acquired_roster
from engine.domain import run as contract
from engine.domain.errors import UnavailableError
from engine.domain.plan import VersionPair
from engine.domain.roster import QUERY_ROSTER, RosterRef, RunRoster, roster_digest, roster_ref
from engine.domain.run import MemberUpdateInput, State, member_workflow_id
from engine.domain.runspec import UpgradeType
from engine.runtime.runs import UpdateRunHandle
from tests.runs.harness import Cluster, Fleet, strategy
from tests.runs.test_drain_restore import drain_fleet, service_in, start_run

MEMBERS = ["a-1", "a-2", "a-3"]
ONE_STAGE = [{"name": "all", "groups": [{"name": "all"}]}]


def _payload(attributes: dict[str, Any]) -> Any:
    """The first payload of an event's input, decoded from its JSON form."""
    data = attributes["input"]["payloads"][0]["data"]
    return json.loads(base64.b64decode(data))


def _member_input(payload: dict[str, Any]) -> dict[str, Any]:
    """A member step's input: the member input itself, or the request wrapping it."""
    inner = payload.get("member")
    return inner if isinstance(inner, dict) else payload


@contextlib.asynccontextmanager
async def _completed_run(
    client: Client, task_queue: str, state_dir: Path
) -> AsyncIterator[tuple[Fleet, UpdateRunHandle, list[dict[str, Any]]]]:
    """A one-stage run of ``MEMBERS`` (a-1 serving a global service with a-2) run to its
    end: the fleet, the run and a-1's member history (its events, as JSON), worker still up."""
    clusters = [Cluster(name, group="all") for name in MEMBERS]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        member_id = member_workflow_id(fleet.network, status.run_id, "a-1")
        history = await client.get_workflow_handle(member_id).fetch_history()
        yield fleet, run, history.to_json_dict()["events"]


async def test_a_members_history_names_the_runs_member_list_and_never_copies_it(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The member's input and every step's input carry no member list; the input names the
    run, the list's size and its digest, and the run's roster query answers that list."""
    async with _completed_run(client, task_queue, state_dir) as (fleet, run, events):
        # a-1 and a-2 serve the service: their drain, verify and restore read the peers.
        assert sorted(e.cluster for e in fleet.audit("serviceRestored")) == ["a-1", "a-2"]

        started = _payload(events[0]["workflowExecutionStartedEventAttributes"])
        assert started["networkMembers"] == []
        assert started["roster"] == {
            "workflowId": run.workflow_id,
            "runInstance": started["runInstance"],
            "size": 3,
            "digest": roster_digest(MEMBERS),
        }
        steps = [
            _member_input(_payload(e["activityTaskScheduledEventAttributes"]))
            for e in events
            if "activityTaskScheduledEventAttributes" in e
        ]
        assert len(steps) >= 6  # preflight, drain (2), hops (2), verify, restore (2)
        assert all(step["networkMembers"] == [] for step in steps)

        roster = await client.get_workflow_handle(run.workflow_id).query(
            QUERY_ROSTER, result_type=RunRoster
        )
        assert roster == RunRoster(run_instance=started["runInstance"], members=MEMBERS)
        # The server alone answers it too: what the run's acquire returned, in its history.
        ref = RosterRef.model_validate(started["roster"])
        assert await acquired_roster(client, ref) == roster
        other = ref.model_copy(update={"digest": roster_digest(["a-1", "a-2"]), "size": 2})
        assert await acquired_roster(client, other) is None


async def test_a_member_of_todays_run_drains_record_first_without_a_patch_marker(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The run's input tells the member to record its drain first, so the member asks no
    patch: its history has no marker and no ``TemporalChangeVersion`` upsert (two events
    and a visibility write per member), and it still annotates before it waits."""
    async with _completed_run(client, task_queue, state_dir) as (_, _run, events):
        assert _payload(events[0]["workflowExecutionStartedEventAttributes"])["recordFirst"]
        kinds = {e["eventType"] for e in events}
        assert "EVENT_TYPE_MARKER_RECORDED" not in kinds
        assert "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES" not in kinds
        steps = [
            e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in events
            if "activityTaskScheduledEventAttributes" in e
        ]
        assert steps[:3] == [contract.PREFLIGHT, contract.DRAIN_ANNOTATE, contract.DRAIN_WAIT]
        assert contract.DRAIN not in steps


def _input(**fields: Any) -> MemberUpdateInput:
    return MemberUpdateInput(
        run_id="r1",
        network="net",
        member="a-1",
        attempt=1,
        upgrade_type=UpgradeType.FULL,
        hops=[],
        target=VersionPair(kubernetes_version="1.33", cilium_version="1.17.9"),
        mesh_ready_timeout=dt.timedelta(seconds=30),
        **fields,
    )


class _Run:
    """A run's roster query, answered from a list (counts how often it was asked)."""

    def __init__(self, members: list[str], *, instance: str = "i1") -> None:
        self.roster = RunRoster(run_instance=instance, members=members)
        self.asked = 0
        self.failures = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, ref: RosterRef) -> RunRoster:
        self.asked += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise UnavailableError(f"cannot read the member list of run {ref.workflow_id}")
        return self.roster


async def test_concurrent_steps_of_one_run_read_its_member_list_once() -> None:
    run = _Run(MEMBERS)
    run.gate.clear()  # every step asks before the first answer arrives
    reader = RosterReader(run.fetch)
    member = _input(roster=roster_ref("updaterun/net/r1", "i1", MEMBERS))
    reads = [asyncio.ensure_future(reader.members(member)) for _ in range(20)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await asyncio.gather(*reads) == [MEMBERS] * 20
    assert await reader.members(member) == MEMBERS
    assert run.asked == 1


async def test_an_input_that_carries_its_member_list_is_read_without_asking_the_run() -> None:
    run = _Run(["other"])
    reader = RosterReader(run.fetch)
    assert await reader.members(_input(network_members=MEMBERS)) == MEMBERS
    assert run.asked == 0


async def test_a_run_answering_another_list_than_its_member_was_started_with_is_refused() -> None:
    run = _Run(["a-1", "a-2"])
    reader = RosterReader(run.fetch)
    member = _input(roster=roster_ref("updaterun/net/r1", "i1", MEMBERS))
    with pytest.raises(RosterMismatchError) as refused:
        await reader.members(member)
    message = str(refused.value)
    assert "run updaterun/net/r1 lists 2 members" in message
    assert f"not the 3 members of run updaterun/net/r1 ({roster_digest(MEMBERS)})" in message


async def test_a_failed_read_of_the_member_list_is_asked_again_by_the_next_step() -> None:
    run = _Run(MEMBERS)
    run.failures = 1
    reader = RosterReader(run.fetch)
    member = _input(roster=roster_ref("updaterun/net/r1", "i1", MEMBERS))
    with pytest.raises(UnavailableError):
        await reader.members(member)
    assert await reader.members(member) == MEMBERS
    assert run.asked == 2


async def test_the_reader_keeps_only_its_latest_rosters() -> None:
    run = _Run(MEMBERS)
    reader = RosterReader(run.fetch, capacity=2)
    refs = [roster_ref(f"updaterun/net/r{n}", "i1", MEMBERS) for n in range(3)]
    for ref in refs:
        await reader.members(_input(roster=ref))
    assert run.asked == 3
    await reader.members(_input(roster=refs[0]))  # evicted by the third: asked again
    assert run.asked == 4
