"""The update-run benchmark runs end to end at a small size (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "update_run.py"
KEYS = {
    "members",
    "stages",
    "wallSeconds",
    "floorSeconds",
    "ratio",
    "stageTransitionLatencyMedianSeconds",
    "stageTransitionWithGatesMedianSeconds",
    "maxHistoryEvents",
    "workerPeakRssMb",
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
    # Gates and soaks are taken out of the transitions, never more than the window held.
    without_gates = result["stageTransitionLatencyMedianSeconds"]
    assert 0 <= without_gates <= result["stageTransitionWithGatesMedianSeconds"]
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
