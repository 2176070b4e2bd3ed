"""The rehearsal as a picture: ``simulate --html``, ``run report --html`` and the page itself.

The page is read back with the stdlib's ``html.parser`` (``tests/simulate/page.py``):
every member a row, every step a bar with its times, gates and soaks, one chart
per global service; the JSON island carries the same data; and nothing from the
run (names, messages) can turn into markup.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from engine.domain.fleet import parse_fleet
from engine.domain.run import State
from engine.runtime import devserver
from engine.runtime.report_html import (
    DATA_ISLAND_ID,
    Interval,
    MemberRow,
    ServiceSeries,
    StepSpan,
    Timeline,
    Violation,
    render_html,
    timeline_to_json,
)
from engine.runtime.timeline import member_history, rehearsal_services
from tests.runs.harness import Cluster, fleet_document, running_fleet, strategy, wait_until
from tests.runtime.serverproc import MESHFLEET
from tests.simulate.page import Page, read_page
from tests.simulate.test_simulate import EXAMPLES, TIME_SCALE, report_of, simulate

#: One member's update, step by step, when nothing goes wrong (one hop: one control plane).
ALL_STEPS = ["Preflight", "Drain", "ControlPlane", "Cilium", "Verify", "Restore"]
#: Restore runs only where the drain annotated something (a global service the member
#: serves); a member that serves none has nothing to restore.
COMPLETED_STEPS = (ALL_STEPS, ALL_STEPS[:-1])


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _members(report: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        m["name"]: (s["name"], g["name"], m)
        for s in report["status"]
        for g in s["groups"]
        for m in g["members"]
    }


def _assert_island_matches_the_markup(page: Page) -> None:
    island = {m["name"]: m for m in page.island["members"]}
    assert set(island) == set(page.rows)
    for name, row in page.rows.items():
        steps = island[name]["steps"]
        assert [s["step"] for s in steps] == [b.step for b in row.bars]
        assert [_when(s["start"]) for s in steps] == [b.start for b in row.bars]
        assert [_when(s["end"]) for s in steps] == [b.end for b in row.bars]
        assert island[name]["state"] == row.state


def _assert_steps_follow_the_report(page: Page, report: dict[str, Any]) -> None:
    """Every member is a row in its stage and group; its steps lie inside its reported times."""
    members = _members(report)
    assert set(page.rows) == set(members)
    for name, (stage, group, member) in members.items():
        row = page.rows[name]
        assert (row.stage, row.group, row.state) == (stage, group, member["state"])
        started, completed = _when(member["startTime"]), _when(member["completedTime"])
        if member["state"] == "Completed":
            assert [b.step for b in row.bars] in COMPLETED_STEPS, name
        elif member["state"] == "Skipped" and started is not None:
            assert [b.step for b in row.bars] == ["Preflight"], name  # already at the target
        previous_end = started
        for bar in row.bars:
            assert started is not None
            assert completed is not None
            assert bar.end is not None
            assert started <= bar.start <= bar.end <= completed, (name, bar.step)
            assert previous_end is not None
            assert bar.start >= previous_end, (name, bar.step)  # one step after the other
            previous_end = bar.end


def _assert_upgrades_fall_inside_their_steps(page: Page, report: dict[str, Any]) -> None:
    """The simulator saw each upgrade start while the member's step for it was running."""
    step_of = {"controlPlaneUpgradeStarted": "ControlPlane", "ciliumUpgradeStarted": "Cilium"}
    checked = 0
    for entry in report["audit"]:
        step = step_of.get(entry["event"])
        if step is None:
            continue
        at = _when(entry["at"])
        assert at is not None
        bars = [b for b in page.rows[entry["cluster"]].bars if b.step == step]
        assert any(b.start <= at <= (b.end or at) for b in bars), (entry, bars)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(
    ("strategy_file", "time_scale"),
    [
        ("strategy-ring.yaml", "0.001"),  # slow enough that its soaks last a second or more
        ("strategy-dag.yaml", TIME_SCALE),
        ("strategy-fleet.json", TIME_SCALE),
    ],
)
def test_simulate_html_on_each_example_draws_every_member_and_step_as_the_report_has_them(
    strategy_file: str,
    time_scale: str,
    temporal_server: devserver.EmbeddedServer,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    html_file = tmp_path / "out" / "timeline.html"  # the folder is created
    ran = simulate(
        "simulate",
        "--fleet", str(EXAMPLES / "fleet.yaml"),
        "--strategy", str(EXAMPLES / strategy_file),
        "--target", "1.33",
        "--approve-all",
        "--time-scale", time_scale,
        "--html", str(html_file),
        "--output", "json",
        state_dir=state_dir,
        address=temporal_server.address,
    )  # fmt: skip
    report = report_of(ran)
    assert ran.returncode == 0, report["status"]
    assert f"timeline: {html_file}" in ran.stderr  # stdout carries only the JSON report
    page = read_page(html_file.read_text())

    _assert_steps_follow_the_report(page, report)
    _assert_upgrades_fall_inside_their_steps(page, report)
    _assert_island_matches_the_markup(page)
    fleet = yaml.safe_load((EXAMPLES / "fleet.yaml").read_text())
    services = {f"{s['namespace']}/{s['name']}": s for s in fleet["spec"]["globalServices"]}
    assert set(page.charts) == set(services)
    for key, chart in page.charts.items():
        assert chart["data-minimum"] == str(services[key]["minReadyEndpoints"])
        assert chart["data-violations"] == "0"
    # Each gate the strategy declares waited, and each soak ran, in its own stage.
    drawn = {(i["data-kind"], i["data-label"]) for i in page.intervals}
    for stage in report["plan"]["stages"]:
        gates = stage["beforeGates"] + stage["afterGates"]
        for gate in gates:
            assert any(kind == "gate" and gate["displayName"] in label for kind, label in drawn), (
                gate
            )
    # Gates and soaks happen inside the run, each ending after it began.
    run_start = min(b.start for row in page.rows.values() for b in row.bars)
    run_end = max(b.end for row in page.rows.values() for b in row.bars if b.end)
    for interval in page.island["intervals"]:
        began, ended = _when(interval["start"]), _when(interval["end"])
        assert began is not None
        assert ended is not None, interval
        assert began <= ended, interval
        assert run_start - dt.timedelta(seconds=30) <= began, interval
        assert ended <= run_end + dt.timedelta(seconds=60), interval
    soaked = [s["name"] for s in report["plan"]["stages"] if s["afterStageWaitSeconds"]]
    soaks = [label for kind, label in drawn if kind == "soak"]
    assert sorted(soaks) == sorted(f"soak after stage {name}" for name in soaked)
    # Self-contained: no script but the data island, nothing fetched from anywhere.
    assert page.scripts == [{"type": "application/json", "id": DATA_ISLAND_ID}]
    assert page.external == []


def test_a_failed_member_is_marked_on_the_step_that_failed(
    temporal_server: devserver.EmbeddedServer, state_dir: Path, tmp_path: Path
) -> None:
    fail = {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota <exceeded>"}
    clusters = [
        Cluster("alpha", group="all"),
        Cluster("beta", group="all", faults=[fail]),
        Cluster("gamma", group="all"),
    ]
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet_document(clusters)))
    strategy_file = tmp_path / "strategy.yaml"
    group = {"name": "all", "maxConcurrency": "1", "maxAllowedFailures": "0"}
    strategy_file.write_text(yaml.safe_dump(strategy([{"name": "all", "groups": [group]}])))
    html_file = tmp_path / "timeline.html"

    ran = simulate(
        "simulate",
        "--fleet", str(fleet_file),
        "--strategy", str(strategy_file),
        "--target", "1.33",
        "--time-scale", TIME_SCALE,
        "--html", str(html_file),
        "--output", "json",
        state_dir=state_dir,
        address=temporal_server.address,
    )  # fmt: skip

    assert ran.returncode == 1, ran.stdout + ran.stderr
    page = read_page(html_file.read_text())
    beta = page.rows["beta"]
    assert beta.state == "Failed"
    assert "failed" in beta.classes
    assert "quota <exceeded>" in beta.label_title
    failed = [b for b in beta.bars if b.failed]
    assert [b.step for b in failed] == ["ControlPlane"]
    assert "failed" in failed[0].classes
    assert "quota <exceeded>" in failed[0].title
    # Nothing but a restore (where it had drained something) follows the failed step.
    assert [b.step for b in beta.bars][-1] in ("ControlPlane", "Restore")
    assert "failed" not in page.rows["alpha"].classes
    assert page.rows["gamma"].bars == []  # never started: the budget was spent
    assert page.island["state"] == "Failed"


def test_a_path_that_is_a_directory_is_refused_before_anything_starts(tmp_path: Path) -> None:
    ran = simulate(
        "simulate",
        "--fleet", str(EXAMPLES / "fleet.yaml"),
        "--strategy", str(EXAMPLES / "strategy-ring.yaml"),
        "--target", "1.33",
        "--html", str(tmp_path),
        state_dir=tmp_path / "state",
        address=None,
    )  # fmt: skip
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "--html" in ran.stderr
    assert "is a directory" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert not (tmp_path / "state" / "simulate").exists()  # no server was started


# --- a real run -------------------------------------------------------------------------


async def _meshfleet(address: str, task_queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHFLEET_TASK_QUEUE": task_queue}
    return await asyncio.to_thread(
        subprocess.run,
        [MESHFLEET, "--address", address, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_run_report_draws_a_real_run_from_its_status_and_histories(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    clusters = [Cluster(f"real-{n}", group="all") for n in range(1, 4)]
    checkout = {
        "namespace": "shop",
        "name": "checkout",
        "clusters": {"real-1": 2, "real-2": 3, "real-3": 4},
        "minReadyEndpoints": 2,
    }
    document = strategy(
        [{"name": "all", "groups": [{"name": "all", "maxConcurrency": "1"}]}],
        minReadyEndpoints=2,
    )
    html_file = tmp_path / "run.html"
    async with running_fleet(client, task_queue, state_dir, clusters, [checkout]) as fleet:
        handle = await fleet.start_run(document)
        final = await wait_until(handle, lambda s: s.state is State.COMPLETED)

        ran = await _meshfleet(
            temporal_server.address,
            task_queue,
            "run",
            "report",
            handle.ref,
            "--html",
            str(html_file),
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"timeline: {html_file}" in ran.stdout
        audit = [e.to_json_dict() for e in fleet.backend.audit()]

    page = read_page(html_file.read_text())
    report = {
        "status": [
            {
                "name": stage.name,
                "groups": [
                    {
                        "name": group.name,
                        "members": [
                            {
                                "name": m.name,
                                "state": m.state.value,
                                "startTime": m.start_time.isoformat() if m.start_time else None,
                                "completedTime": (
                                    m.completed_time.isoformat() if m.completed_time else None
                                ),
                            }
                            for m in group.members
                        ],
                    }
                    for group in stage.groups
                ],
            }
            for stage in final.stages
        ],
        "audit": audit,
    }
    _assert_steps_follow_the_report(page, report)
    _assert_upgrades_fall_inside_their_steps(page, report)
    _assert_island_matches_the_markup(page)
    # The run's baseline (9 endpoints), one member drained at a time: 9 - 4 at the lowest.
    chart = page.charts["shop/checkout"]
    assert chart["data-minimum"] == "2"
    assert chart["data-lowest"] == "5"
    counts = [v for _, v in page.island["services"][0]["points"]]
    assert counts[0] == 9
    assert counts[-1] == 9  # every member restored


async def test_run_report_keeps_the_failed_attempt_a_retry_mended(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    fail = {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}
    clusters = [Cluster("mend-1", group="all"), Cluster("mend-2", group="all", faults=[fail])]
    document = strategy([{"name": "all", "groups": [{"name": "all", "maxAllowedFailures": "1"}]}])
    html_file = tmp_path / "run.html"
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        handle = await fleet.start_run(document)
        assert (await handle.result()).state is State.FAILED
        await handle.retry(["mend-2"], reason="quota raised")
        await wait_until(handle, lambda s: s.member("mend-2").state is State.COMPLETED)  # type: ignore[union-attr]

        ran = await _meshfleet(
            temporal_server.address,
            task_queue,
            "run",
            "report",
            handle.ref,
            "--html",
            str(html_file),
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr

    mended = read_page(html_file.read_text()).rows["mend-2"]
    assert mended.state == "Completed"
    assert "failed" not in mended.classes  # the retry mended it
    first = [b for b in mended.bars if b.attempt == 1]
    second = [b for b in mended.bars if b.attempt == 2]
    assert [b.step for b in first if b.failed] == ["ControlPlane"]
    assert [b.step for b in first][-1] in ("ControlPlane", "Restore")  # nothing else after
    assert [b.step for b in second] in COMPLETED_STEPS
    assert not any(b.failed for b in second)
    assert max(b.end for b in first if b.end) <= min(b.start for b in second)
    assert "(attempt 1)" in first[0].title


async def test_run_report_of_an_unknown_run_says_so(
    temporal_server: devserver.EmbeddedServer, task_queue: str, tmp_path: Path
) -> None:
    ran = await _meshfleet(
        temporal_server.address, task_queue, "run", "report", "nowhere/nothing",
        "--html", str(tmp_path / "x.html"),
    )  # fmt: skip
    assert ran.returncode != 0
    assert "Traceback" not in ran.stderr
    assert not (tmp_path / "x.html").exists()


# --- the page itself ----------------------------------------------------------------------

T0 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _member(
    name: str, stage: str, group: str, begin: float, message: str | None = None
) -> MemberRow:
    steps = [
        StepSpan(step, _at(begin + 10 * i), _at(begin + 10 * i + 8))
        for i, step in enumerate(ALL_STEPS)
    ]
    return MemberRow(name, stage, group, "Completed", message, _at(begin), _at(begin + 60), steps)


def test_names_and_messages_from_the_run_never_become_markup() -> None:
    hostile = '</script><script>alert(1)</script><img src=x onerror="alert(2)">&amp;'
    timeline = Timeline(
        title=f"Rehearsal of {hostile}",
        network="net",
        run="r",
        state="Failed",
        target="Kubernetes 1.33",
        start=T0,
        end=_at(100),
        stages=["s"],
        members=[_member("alpha", "s", hostile, 0, message=hostile)],
        intervals=[Interval("gate", hostile, "s", None, T0, _at(5), "Completed")],
        services=[
            ServiceSeries(
                hostile, 1, [(T0, 3)], [Violation(_at(1), _at(2), hostile, 0)], source=hostile
            )
        ],
        notes=[hostile],
    )

    text = render_html(timeline)
    page = read_page(text)

    assert "img" not in page.tags
    assert page.scripts == [{"type": "application/json", "id": DATA_ISLAND_ID}]
    assert page.rows["alpha"].group == hostile  # attributes hold the exact text
    assert hostile in page.rows["alpha"].label_title
    assert hostile in page.charts
    assert page.island == json.loads(json.dumps(timeline_to_json(timeline)))


def test_a_255_member_run_is_one_row_per_member_with_every_step_and_stays_small() -> None:
    stages = [f"stage-{n}" for n in range(5)]
    members = [
        _member(f"cluster-{n:03d}", stages[n % 5], f"group-{n % 15}", begin=(n % 5) * 120 + n % 7)
        for n in range(255)
    ]
    timeline = Timeline(
        title="Rehearsal of big/run",
        network="big",
        run="run",
        state="Completed",
        target="Kubernetes 1.33",
        start=T0,
        end=_at(700),
        stages=stages,
        members=members,
        intervals=[
            Interval("soak", f"soak after stage {s}", s, None, _at(60), _at(100), "Completed")
            for s in stages
        ],
    )

    text = render_html(timeline)
    page = read_page(text)

    assert len(page.rows) == 255
    assert all([b.step for b in row.bars] in COMPLETED_STEPS for row in page.rows.values())
    assert len(page.intervals) == 5
    assert len(text.encode()) < 1_000_000  # opens at once, even attached to a ticket
    # Labels stay in view while the timeline scrolls sideways, and the time axis while it
    # scrolls down.
    assert ".label{position:sticky;left:0" in text
    assert ".axis{position:sticky;top:0" in text


def test_a_service_chart_counts_drains_and_lost_endpoints_and_carries_the_violations() -> None:
    fleet = parse_fleet(
        fleet_document(
            [Cluster("alpha"), Cluster("beta"), Cluster("gamma")],
            [
                {
                    "namespace": "shop",
                    "name": "checkout",
                    "clusters": {"alpha": 3, "beta": 2, "gamma": 4},
                    "minReadyEndpoints": 5,
                }
            ],
        )
    )

    def entry(seconds: float, cluster: str, event: str, **details: Any) -> dict[str, Any]:
        # The simulator's clock: one simulated second is 0.5 s of wall time here.
        return {
            "at": _at(seconds * 0.5).isoformat(),
            "simTime": seconds,
            "cluster": cluster,
            "event": event,
            "details": details,
        }

    audit = [
        entry(0, "alpha", "memberJoined", network="n"),
        entry(10, "alpha", "serviceDrained", namespace="shop", service="checkout"),
        entry(12, "beta", "serviceDrained", namespace="shop", service="cart"),  # another service
        entry(20, "alpha", "serviceRestored", namespace="shop", service="checkout"),
        entry(30, "gamma", "faultInjected", action="fired", id=7, kind="endpointsLost",
              service="shop/checkout", duration="8s"),
        entry(34, "beta", "serviceDrained", namespace="shop", service="checkout"),
        entry(40, "beta", "serviceRestored", namespace="shop", service="checkout"),
    ]  # fmt: skip
    violations = [
        {"service": "shop/checkout", "viewpoint": "alpha", "minReadyEndpoints": 5,
         "readyRoutable": 3, "routable": 5, "started": 34.0, "ended": 38.0},
    ]  # fmt: skip

    (series,) = rehearsal_services(fleet, ["alpha", "beta", "gamma"], audit, violations, T0, 0.5)

    assert series.service == "shop/checkout"
    assert series.minimum == 5
    assert [(round((t - T0).total_seconds(), 1), v) for t, v in series.points] == [
        (0.0, 9),
        (5.0, 6),  # alpha drained
        (10.0, 9),  # alpha restored
        (15.0, 5),  # gamma's endpoints lost for 8 simulated seconds
        (17.0, 3),  # beta drained while gamma's are still lost
        (19.0, 7),  # gamma's back
        (20.0, 9),  # beta restored
    ]
    assert series.lowest == 3
    assert series.violations == [Violation(_at(17), _at(19), "alpha", 3)]
    chart = read_page(
        render_html(
            Timeline("t", "n", "r", "Completed", "1.33", T0, _at(20), [], [], services=[series])
        )
    ).charts["shop/checkout"]
    assert (chart["data-lowest"], chart["data-violations"]) == ("3", "1")


def test_a_step_that_failed_or_timed_out_is_failed_and_a_cancelled_one_is_not() -> None:
    def scheduled(event_id: int, activity: str, second: int) -> HistoryEvent:
        event = HistoryEvent(event_id=event_id)
        event.event_time.FromDatetime(_at(second))
        event.activity_task_scheduled_event_attributes.activity_type.name = activity
        return event

    def closed(event_id: int, kind: str, of: int, second: int, message: str = "") -> HistoryEvent:
        event = HistoryEvent(event_id=event_id)
        event.event_time.FromDatetime(_at(second))
        attributes = getattr(event, f"activity_task_{kind}_event_attributes")
        attributes.scheduled_event_id = of
        if message:
            attributes.failure.message = message
        return event

    events = [
        scheduled(1, "preflight_member", 0),
        closed(2, "completed", 1, 1),
        scheduled(3, "drain_member", 2),
        closed(4, "completed", 3, 3),
        scheduled(5, "upgrade_control_plane", 4),
        closed(6, "timed_out", 5, 9, "activity StartToClose timeout"),
        scheduled(7, "upgrade_cilium", 10),
        closed(8, "canceled", 7, 11),
        scheduled(9, "restore_member", 12),  # still running
        scheduled(10, "check_mesh_health", 12),  # not a member step
    ]

    steps = member_history(events).steps

    assert [(s.step, s.failed, s.message) for s in steps] == [
        ("Preflight", False, None),
        ("Drain", False, None),
        ("ControlPlane", True, "activity StartToClose timeout"),
        ("Cilium", False, "cancelled"),
        ("Restore", False, None),
    ]
    assert (steps[2].start, steps[2].end) == (_at(4), _at(9))
    assert steps[-1].end is None
