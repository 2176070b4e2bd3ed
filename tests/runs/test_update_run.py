"""Staged update runs on the simulated fleet: order, concurrency, budgets, health, continuity."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from engine.domain.run import RunStatus, State
from engine.domain.versions import Version
from tests.runs.harness import Cluster, Fleet, running_fleet, strategy, wait_until

DAG_CLUSTERS = [
    Cluster("canary-1", group="canary"),
    Cluster("eu-1", group="eu"),
    Cluster("eu-2", group="eu"),
    Cluster("eu-3", group="eu"),
    Cluster("us-1", group="us"),
    Cluster("us-2", group="us"),
    Cluster("rest-1", group="rest"),
    Cluster("rest-2", group="rest"),
]

DAG_STRATEGY = strategy(
    [
        {"name": "canary", "groups": [{"name": "canary"}]},
        {"name": "eu", "dependsOn": ["canary"], "groups": [{"name": "eu", "maxConcurrency": "2"}]},
        {"name": "us", "dependsOn": ["canary"], "groups": [{"name": "us", "maxConcurrency": "2"}]},
        {"name": "rest", "dependsOn": ["eu", "us"], "groups": [{"name": "rest"}]},
    ]
)


def max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """The largest number of intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def intervals(
    status: RunStatus, stage: str, group: str | None = None
) -> list[tuple[dt.datetime, dt.datetime]]:
    found = []
    for s, g, m in status.members():
        if s.name == stage and (group is None or g.name == group):
            assert m.start_time is not None
            assert m.completed_time is not None
            found.append((m.start_time, m.completed_time))
    return found


def started_at(fleet: Fleet, event: str) -> dict[str, dt.datetime]:
    """First time each cluster logged ``event``."""
    found: dict[str, dt.datetime] = {}
    for entry in fleet.audit(event):
        if entry.cluster is not None:
            found.setdefault(entry.cluster, entry.at)
    return found


async def test_a_dag_run_honours_dependencies_and_every_concurrency_limit(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Canary, then eu and us in parallel, then the rest: order and limits hold in the audit."""
    async with running_fleet(client, task_queue, state_dir, DAG_CLUSTERS) as fleet:
        run = await fleet.start_run(DAG_STRATEGY)
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        assert all(m.state is State.COMPLETED for _, _, m in status.members())

        cp_started = started_at(fleet, "controlPlaneUpgradeStarted")
        restored = started_at(fleet, "ciliumUpgradeCompleted")
        stage_of = {m.name: s.name for s, _, m in status.members()}
        depends = {s.name: s.depends_on for s in status.stages}
        for member, stage_name in stage_of.items():
            for dependency in depends[stage_name]:
                upstream = [n for n, st in stage_of.items() if st == dependency]
                done = max(restored[n] for n in upstream)
                assert cp_started[member] >= done, f"{member} started before {dependency} finished"

        for stage in status.stages:
            assert max_overlap(intervals(status, stage.name)) <= stage.max_concurrency
            for group in stage.groups:
                overlap = max_overlap(intervals(status, stage.name, group.name))
                assert overlap <= group.max_concurrency
        # eu and us each had room for 2 and used it: the limits were not met by accident.
        assert max_overlap(intervals(status, "eu")) == 2
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == len(DAG_CLUSTERS)


FAILING_CLUSTERS = [
    Cluster("first-1", group="first"),
    Cluster(
        "first-2",
        group="first",
        faults=[{"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}],
    ),
    Cluster("second-1", group="second"),
]


def two_stages(budget: str) -> dict[str, object]:
    return strategy(
        [
            {
                "name": "first",
                "maxAllowedFailures": budget,
                "groups": [{"name": "first", "maxAllowedFailures": budget}],
            },
            {"name": "second", "groups": [{"name": "second"}]},
        ]
    )


async def test_with_no_failure_budget_a_failed_member_fails_the_run_and_later_stages_are_untouched(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with running_fleet(client, task_queue, state_dir, FAILING_CLUSTERS) as fleet:
        status = await (await fleet.start_run(two_stages("0"))).result()
        assert status.state is State.FAILED
        failed = status.member("first-2")
        assert failed is not None
        assert failed.state is State.FAILED
        assert "quota exceeded" in (failed.message or "")
        untouched = status.member("second-1")
        assert untouched is not None
        assert untouched.state is State.NOT_STARTED
        assert not [
            e for e in fleet.audit() if e.cluster == "second-1" and "Upgrade" in e.event.value
        ]


async def test_a_failure_within_budget_completes_the_run_and_retry_upgrades_the_failed_member(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with running_fleet(client, task_queue, state_dir, FAILING_CLUSTERS) as fleet:
        run = await fleet.start_run(two_stages("1"))
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        assert [m.name for _, _, m in status.members() if m.state is State.FAILED] == ["first-2"]
        second = status.member("second-1")
        assert second is not None
        assert second.state is State.COMPLETED

        await run.retry(["first-2"], reason="quota raised")
        retried = await run.result()
        assert retried.state is State.COMPLETED
        member = retried.member("first-2")
        assert member is not None
        assert member.state is State.COMPLETED
        assert member.attempts == 2
        described = await fleet.backend.describe_member("first-2")
        assert Version.parse(described.kubernetes_version).minor_version == (1, 33)
        assert retried.controls[-1].action.value == "retry"
        assert retried.controls[-1].reason == "quota raised"


async def test_a_mesh_partition_after_the_upgrade_fails_verify_and_nothing_new_starts(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [
        Cluster(
            "part-1",
            group="all",
            faults=[{"on": "afterUpgrade", "kind": "meshPartition", "duration": "1000h"}],
        ),
        Cluster("part-2", group="all"),
        Cluster("part-3", group="all"),
    ]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        status = await (
            await fleet.start_run(
                strategy([{"name": "all", "groups": [{"name": "all"}]}], meshReadyTimeout="3s")
            )
        ).result()
        assert status.state is State.FAILED, [
            (m.name, m.state, m.message) for _, _, m in status.members()
        ]
        broken = status.member("part-1")
        assert broken is not None
        assert broken.state is State.FAILED
        assert (broken.message or "").startswith("Verify failed")
        others = [status.member(n) for n in ("part-2", "part-3")]
        assert [m.state for m in others if m] == [State.NOT_STARTED, State.NOT_STARTED]
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 1


async def test_two_members_holding_a_services_only_endpoints_are_never_down_together(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """With concurrency 2, continuity defers the second member until the first is back."""
    clusters = [
        Cluster("shop-a", group="shop"),
        Cluster("shop-b", group="shop"),
        Cluster("edge", group="shop"),
    ]
    services = [
        {
            "namespace": "shop",
            "name": "checkout",
            "clusters": {"shop-a": 2, "shop-b": 2},
            "minReadyEndpoints": 2,
        }
    ]
    async with running_fleet(client, task_queue, state_dir, clusters, services) as fleet:
        run = await fleet.start_run(
            strategy([{"name": "all", "groups": [{"name": "shop", "maxConcurrency": "2"}]}])
        )
        status = await run.result()
        assert status.state is State.COMPLETED, [
            (m.name, m.state, m.message) for _, _, m in status.members()
        ]
        assert fleet.backend.violations() == []
        assert not fleet.audit("violation")
        a = status.member("shop-a")
        b = status.member("shop-b")
        assert a is not None
        assert b is not None
        assert a.start_time is not None
        assert b.start_time is not None
        assert a.completed_time is not None
        assert b.completed_time is not None
        # They never overlapped, though the group allowed two at once.
        assert a.completed_time <= b.start_time or b.completed_time <= a.start_time
        drained = [e.cluster for e in fleet.audit("serviceDrained")]
        assert sorted(drained) == ["shop-a", "shop-b"]


async def test_two_members_launched_together_do_not_defer_each_other_forever(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Launched in one pass, the first proceeds and the second waits for it (no livelock)."""
    clusters = [Cluster("pair-a", group="pair"), Cluster("pair-b", group="pair")]
    services = [
        {
            "namespace": "shop",
            "name": "cart",
            "clusters": {"pair-a": 2, "pair-b": 2},
            "minReadyEndpoints": 2,
        }
    ]
    async with running_fleet(client, task_queue, state_dir, clusters, services) as fleet:
        run = await fleet.start_run(
            strategy([{"name": "all", "groups": [{"name": "pair", "maxConcurrency": "2"}]}])
        )
        status = await run.result()
        assert status.state is State.COMPLETED, [
            (m.name, m.message) for _, _, m in status.members()
        ]
        assert fleet.backend.violations() == []
        attempts = sorted(m.attempts for _, _, m in status.members())
        assert attempts == [1, 2]  # one went first; the other was deferred once, then went


async def current_details(client: Client, workflow_id: str) -> str:
    """The run's current details, as the Web UI reads them."""
    metadata = await client.get_workflow_handle(workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    # Cells carry non-breaking gutters for the Web UI (strategies/details.py): compare words.
    return re.sub(r"[ \u00a0]+", " ", metadata.current_details)


async def test_the_web_ui_details_follow_the_run_from_a_waiting_gate_to_the_end(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The details table is rendered after the status changes (once per batch of changes)."""
    clusters = [Cluster("ui-1", group="a"), Cluster("ui-2", group="b"), Cluster("ui-3", group="b")]
    document = strategy(
        [
            {"name": "a", "groups": [{"name": "a"}]},
            {"name": "b", "beforeGates": [{"type": "Approval"}], "groups": [{"name": "b"}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(document)
        await wait_until(run, lambda s: any(g.state.value == "Pending" for g in s.gates()))
        waiting = await current_details(client, run.workflow_id)
        assert "| a | Completed | 1/1 | 0 | 0 | 0 |" in waiting
        assert "| b | Pending | 0/2 | 0 | 0 | 0 |" in waiting
        await run.approve("b/before/0")
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        done = await current_details(client, run.workflow_id)
        assert ": **Completed**" in done
        assert "| b | Completed | 2/2 | 0 | 0 | 0 |" in done


async def test_a_stage_failure_names_the_group_whose_budget_was_exceeded_not_the_stages(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    # The stage allows one failure, its group none: the group's budget is what broke.
    generous_stage = strategy(
        [
            {
                "name": "first",
                "maxAllowedFailures": "1",
                "groups": [{"name": "first", "maxAllowedFailures": "0"}],
            },
            {"name": "second", "groups": [{"name": "second"}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, FAILING_CLUSTERS) as fleet:
        status = await (await fleet.start_run(generous_stage)).result()
        assert status.state is State.FAILED
        expected = "group first exceeded its failure budget (1 failed, 0 allowed)"
        assert status.error == f"stage first failed: {expected}"
        first = next(s for s in status.stages if s.name == "first")
        assert first.message == expected
        assert first.groups[0].message == expected
