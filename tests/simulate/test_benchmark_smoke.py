"""The update-run benchmark runs end to end at a small size (no timing is asserted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from engine.runtime.simulate import ended_in_continue_as_new, history_chain
from tests.polling import eventually_blocking

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "update_run.py"
KEYS = {
    "members",
    "stages",
    "wallSeconds",
    "floorSeconds",
    "ratio",
    "toClose",
    "stageTransitionLatencyMedianSeconds",
    "stageTransitionWithGatesMedianSeconds",
    "maxHistoryEvents",
    "continuedAsNew",
    "workerPeakRssMb",
    "exactlyOnce",
    "upgradesPerMember",
    "cpuSeconds",
    "cpuMillisecondsPerMember",
    "historyEventsPerMember",
    "historyKb",
}


def test_the_benchmark_prints_its_figures_as_one_json_object_and_leaves_no_server() -> None:
    ran = subprocess.run(
        [sys.executable, str(BENCHMARK), "--members", "50", "--stages", "5"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)  # stdout is the JSON object and nothing else
    assert set(result) >= KEYS
    assert result["members"] == 50
    assert result["stages"] == 5
    assert result["activities"]["run"] == result["activities"]["floor"]
    # A run's work ends when it begins to linger (open for resume and retry), before it closes.
    assert result["wallSeconds"] < result["toClose"]["wallSeconds"]
    assert result["toClose"]["ratio"] == result["toClose"]["ratios"][0]
    # Gates and soaks are taken out of the transitions, never more than the window held.
    without_gates = result["stageTransitionLatencyMedianSeconds"]
    assert 0 <= without_gates <= result["stageTransitionWithGatesMedianSeconds"]
    # The simulated fleet's own CPU is a part of the run's worker CPU, and says how large.
    run_cpu = result["cpuSeconds"]["run"]
    assert 0 < run_cpu["simulatedFleet"] < run_cpu["worker"]
    assert "simulatedFleet" not in result["cpuSeconds"]["floor"]  # the floor has no fleet
    ratios = result["cpuRatio"]
    assert 0 < ratios["withoutSimulatedFleet"] < ratios["total"]
    print(json.dumps(result))  # the figures, for whoever reads the test log
    # Its own server went with it (a benchmark's server left behind would be an orphan).
    leftovers = subprocess.run(
        ["pgrep", "-P", "1", "-f", "temporal server start-dev.*meshfleet-bench-"],
        capture_output=True,
    )
    assert leftovers.stdout == b""


def test_repeated_rounds_report_each_ratio_and_their_median() -> None:
    ran = subprocess.run(
        [sys.executable, str(BENCHMARK), "--members", "10", "--stages", "2", "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["runState"] == "Completed"
    assert len(result["ratios"]) == 2
    assert result["ratio"] == round(sum(result["ratios"]) / 2, 3)  # the median of two
    # Both rounds' activities are counted, the same number on each side.
    assert result["activities"]["run"] == result["activities"]["floor"] > 0


def test_two_worker_processes_share_the_work_and_upgrade_every_member_exactly_once() -> None:
    ran = subprocess.run(
        [sys.executable, str(BENCHMARK), "--members", "6", "--stages", "2", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["runState"] == "Completed"
    assert result["workers"] == 2
    # From the simulator's audit: one control plane and one Cilium upgrade per member.
    assert result["exactlyOnce"] is True
    once = {"min": 1, "max": 1}
    assert result["upgradesPerMember"] == {"controlPlane": once, "cilium": once}
    processes = result["workerProcesses"]
    assert len(processes) == 2
    assert len({p["pid"] for p in processes}) == 2
    # Every activity task of the run and the floor ran in one of them, and both took a share.
    tasks = [p["activityTasks"] for p in processes]
    assert sum(tasks) == result["activities"]["run"] + result["activities"]["floor"]
    assert min(tasks) > 0
    assert all(p["peakRssMb"] > 0 and p["cpuSeconds"] > 0 for p in processes)
    # Both sides' CPU is read, the server's from its own process, and divided per member.
    for side in ("run", "floor"):
        assert result["cpuSeconds"][side]["worker"] > 0
        assert result["cpuSeconds"][side]["server"] > 0
        per_member = result["cpuMillisecondsPerMember"][side]["server"]
        assert per_member == round(result["cpuSeconds"][side]["server"] * 1000 / 6, 1)
    assert result["continuedAsNew"] == 0  # nothing in a 6-member run continues as new
    # The fleet's accesses ran in the worker processes: this process did not meter them.
    assert "simulatedFleet" not in result["cpuSeconds"]["run"]
    assert result["cpuRatio"]["total"] > 0
    assert result["cpuRatio"]["withoutSimulatedFleet"] is None
    print(json.dumps(result))
    for process in processes:  # stopped, not orphaned
        assert not Path(f"/proc/{process['pid']}").exists()


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    try:
        eventually_blocking(condition, timeout=timeout)
    except AssertionError:
        return False
    return True


def test_a_terminated_benchmark_takes_its_worker_processes_and_server_with_it() -> None:
    benchmark = subprocess.Popen(
        [sys.executable, str(BENCHMARK), "--members", "6", "--stages", "2", "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Its server and both worker processes are up (three children), then it is stopped.
        assert _wait_for(lambda: len(_children_of(benchmark.pid)) == 3, timeout=120)
        children = _children_of(benchmark.pid)
        benchmark.send_signal(signal.SIGTERM)
        assert benchmark.wait(timeout=60) == 128 + signal.SIGTERM
        assert _wait_for(lambda: not any(_running(c) for c in children), timeout=30)
    finally:
        if benchmark.poll() is None:
            benchmark.kill()
            benchmark.wait()


def test_a_worker_process_that_dies_fails_the_benchmark_at_once_and_leaves_nothing() -> None:
    benchmark = subprocess.Popen(
        [sys.executable, str(BENCHMARK), "--members", "6", "--stages", "2", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert benchmark.stderr is not None
        # Once both poll (the benchmark says so on stderr), one of them is killed.
        ready = next(line for line in benchmark.stderr if "worker processes ready" in line)
        workers = [int(pid) for pid in ready.split(":")[1].split()]
        assert len(workers) == 2
        children = _children_of(benchmark.pid)
        os.kill(workers[0], signal.SIGKILL)
        out, err = benchmark.communicate(timeout=120)
        assert benchmark.returncode == 1
        assert out == ""  # no figures from a round that lost a worker
        assert f"worker process {workers[0]} ended (exit code -9) before the round" in err
        assert "Traceback" not in err
        assert _wait_for(lambda: not any(_running(c) for c in children), timeout=30)
    finally:
        if benchmark.poll() is None:
            benchmark.kill()
            benchmark.communicate()


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Laps:
    left: int


@workflow.defn(name="BenchmarkSmokeLaps")
class LapsWorkflow:
    """Continues as new until no lap is left."""

    @workflow.run
    async def run(self, laps: Laps) -> int:
        if laps.left > 0:
            workflow.continue_as_new(Laps(left=laps.left - 1))
        return 0


async def test_continue_as_new_events_are_counted_over_every_run_of_a_chain(
    client: Client, task_queue: str
) -> None:
    workflow_id = f"laps-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[LapsWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        await client.execute_workflow(
            LapsWorkflow.run, Laps(left=3), id=workflow_id, task_queue=task_queue
        )
    chain = await history_chain(client, workflow_id)
    assert len(chain) == 4  # the first run and three continuations, newest first
    assert [ended_in_continue_as_new(h) for h in chain] == [False, True, True, True]
    first = chain[-1].events[0].workflow_execution_started_event_attributes
    assert first.continued_execution_run_id == ""
