"""``meshfleet simulate`` and ``meshfleet demo`` as a person runs them: a real process.

Most runs use the session server (``--address``), so no test pays for a server
start; one runs on the private embedded server, as ``make demo`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.runtime import devserver
from engine.runtime.simulate import REPORT_KEYS
from tests.runs.harness import Cluster, fleet_document, strategy
from tests.runtime.serverproc import MESHFLEET

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Fast: a 10-minute control-plane upgrade takes 60 ms; soaks shrink to nothing.
TIME_SCALE = "0.0001"


def simulate(
    *args: str, state_dir: Path, address: str | None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env["MESHFLEET_STATE_DIR"] = str(state_dir)
    prefix = [MESHFLEET, *(["--address", address] if address else [])]
    return subprocess.run(
        [*prefix, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def report_of(ran: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert ran.stdout.lstrip().startswith("{"), ran.stdout + ran.stderr
    report: dict[str, Any] = json.loads(ran.stdout)
    return report


@pytest.mark.parametrize(
    "strategy_file", ["strategy-ring.yaml", "strategy-dag.yaml", "strategy-fleet.json"]
)
def test_each_example_rehearses_to_completion_with_exactly_the_report_keys(
    strategy_file: str, temporal_server: devserver.EmbeddedServer, state_dir: Path
) -> None:
    ran = simulate(
        "simulate",
        "--fleet",
        str(EXAMPLES / "fleet.yaml"),
        "--strategy",
        str(EXAMPLES / strategy_file),
        "--target",
        "1.33",
        "--approve-all",
        "--time-scale",
        TIME_SCALE,
        "--output",
        "json",
        state_dir=state_dir,
        address=temporal_server.address,
    )
    report = report_of(ran)
    assert tuple(report) == REPORT_KEYS
    assert ran.returncode == 0, report["status"]
    assert report["state"] == "Completed"
    assert report["target"] == {"kubernetesVersion": "1.33", "ciliumVersion": "1.17.9"}
    assert report["plan"]["planHash"]
    members = [m for s in report["status"] for g in s["groups"] for m in g["members"]]
    assert len(members) == 15
    assert {m["state"] for m in members} <= {"Completed", "Skipped"}
    assert set(members[0]) == {"name", "state", "message", "startTime", "completedTime"}
    assert any(e["event"] == "controlPlaneUpgradeStarted" for e in report["audit"])
    assert report["violations"] == []
    assert report["history"]["workflows"] >= 15
    assert report["history"]["maxEvents"] > 0
    assert report["uiUrl"] is None  # a configured server's Web UI is not known


def test_a_failing_member_fails_the_run_with_exit_code_1_and_is_named_in_the_report(
    tmp_path: Path,
) -> None:
    fail = {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}
    clusters = [
        Cluster("alpha", group="all"),
        Cluster("beta", group="all", faults=[fail]),
        Cluster("gamma", group="all"),
    ]
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet_document(clusters)))
    strategy_file = tmp_path / "strategy.yaml"
    group = {"name": "all", "maxConcurrency": "1", "maxAllowedFailures": "0"}
    nobody = {"name": "nobody", "selector": "ring=none"}  # a plan warning: matches no member
    stages = [{"name": "all", "groups": [group, nobody]}]
    strategy_file.write_text(yaml.safe_dump(strategy(stages)))
    report_file = tmp_path / "report.json"
    state_dir = tmp_path / "state"

    ran = simulate(
        "simulate",
        "--fleet",
        str(fleet_file),
        "--strategy",
        str(strategy_file),
        "--target",
        "1.33",
        "--report",
        str(report_file),
        state_dir=state_dir,
        address=None,  # the private embedded server, as a person without Temporal gets
    )

    assert ran.returncode == 1, ran.stdout + ran.stderr
    report = json.loads(report_file.read_text())
    assert tuple(report) == REPORT_KEYS
    assert report["state"] == "Failed"
    members = {m["name"]: m for s in report["status"] for g in s["groups"] for m in g["members"]}
    assert members["beta"]["state"] == "Failed"
    assert "quota exceeded" in members["beta"]["message"]
    assert report["uiUrl"].startswith("http://127.0.0.1:")
    assert "/namespaces/default/workflows/updaterun%2Ftest%2F" in report["uiUrl"]
    assert "failed beta" in ran.stdout
    # The injected fault is one line, not an SDK traceback; the plan's warning is shown.
    assert "Traceback" not in ran.stdout + ran.stderr
    assert "upgrade_control_plane of beta failed:" in ran.stdout
    assert "plan warning: spec.stages[0].groups[1]: group 'nobody'" in ran.stdout
    assert "gone when it exits; add --keep-server" in ran.stdout
    # The private server and its state are gone with the command.
    assert not any((state_dir / "simulate").iterdir())


def test_invalid_input_exits_2_and_lists_every_problem(tmp_path: Path) -> None:
    document = fleet_document([Cluster("alpha"), Cluster("beta")])
    document["spec"]["clusters"][1]["clusterId"] = 1  # the same id twice
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(document))

    ran = simulate(
        "simulate",
        "--fleet",
        str(fleet_file),
        "--strategy",
        str(tmp_path / "missing.yaml"),
        "--target",
        "1.x",
        "--time-scale",
        "-1",
        "--output",
        "json",
        state_dir=tmp_path / "state",
        address=None,
    )

    assert ran.returncode == 2, ran.stdout + ran.stderr
    errors = json.loads(ran.stdout)["errors"]
    text = " ".join(f"{e['path']}: {e['message']}" for e in errors)
    assert "clusterId" in text
    assert "missing.yaml" in text
    assert "--target" in text
    assert "--time-scale" in text
    assert "Traceback" not in ran.stderr
    assert not (tmp_path / "state" / "simulate").exists()  # nothing was started


def test_a_network_the_fleet_file_lacks_is_invalid_input(tmp_path: Path) -> None:
    ran = simulate(
        "simulate",
        "--fleet",
        str(EXAMPLES / "fleet.yaml"),
        "--strategy",
        str(EXAMPLES / "strategy-ring.yaml"),
        "--target",
        "1.33",
        "--network",
        "nope",
        state_dir=tmp_path / "state",
        address=None,
    )
    assert ran.returncode == 2
    assert "no network 'nope'" in ran.stderr
    assert "prod-mesh" in ran.stderr


def test_the_demo_completes_without_a_terminal_and_shows_every_member_at_the_target(
    temporal_server: devserver.EmbeddedServer, state_dir: Path
) -> None:
    ran = simulate(
        "demo",
        "--time-scale",
        "0",
        state_dir=state_dir,
        address=temporal_server.address,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "target Kubernetes 1.33 (Cilium 1.17.9): 14 completed" in ran.stdout
    assert "approved gate canary/after/0" in ran.stdout
    # The demo draws its run and says where (the state directory unless --html says).
    timeline = state_dir.absolute() / "demo-timeline.html"
    assert f"timeline: {timeline}" in ran.stdout
    assert timeline.read_text().count('class="row member') == 14


def test_a_member_that_can_never_be_drained_refuses_the_rehearsal_with_exit_2(
    temporal_server: devserver.EmbeddedServer, state_dir: Path, tmp_path: Path
) -> None:
    """A global service only one member serves (minimum 1 elsewhere) can never let it drain."""
    fleet_file = tmp_path / "fleet.yaml"
    only_a = [{"namespace": "shop", "name": "ledger", "clusters": {"a-1": 2}}]
    fleet_file.write_text(
        yaml.safe_dump(fleet_document([Cluster("a-1", "g"), Cluster("b-1", "g")], only_a)),
        encoding="utf-8",
    )
    strategy_file = tmp_path / "strategy.yaml"
    strategy_file.write_text(
        yaml.safe_dump(strategy([{"name": "s", "groups": [{"name": "g"}]}])), encoding="utf-8"
    )
    ran = simulate(
        "simulate", "--fleet", str(fleet_file), "--strategy", str(strategy_file),
        "--target", "1.33", "--time-scale", TIME_SCALE,
        state_dir=state_dir, address=temporal_server.address,
    )  # fmt: skip
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "'a-1' can never be drained" in ran.stderr
    assert "shop/ledger" in ran.stderr
    assert "Traceback" not in ran.stderr
