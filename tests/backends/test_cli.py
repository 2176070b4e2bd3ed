"""``meshfleet sim``: init, load, show, fault add|clear and audit, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.runtime.cli import app


@pytest.fixture
def run(world_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MESHFLEET_STATE_DIR", str(world_dir))
    return CliRunner()


def test_init_prints_a_starter_file_that_loads_and_shows(run: CliRunner, tmp_path: Path) -> None:
    """sim init > fleet.yaml; sim load fleet.yaml; sim show --output json."""
    init = run.invoke(app, ["sim", "init", "--example", "demo"])
    assert init.exit_code == 0, init.output
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(init.stdout)
    loaded = run.invoke(app, ["sim", "load", str(fleet)])
    assert loaded.exit_code == 0, loaded.output
    again = run.invoke(app, ["sim", "load", str(fleet)])
    assert again.exit_code == 2
    assert "--reset" in again.output
    assert run.invoke(app, ["sim", "load", str(fleet), "--reset"]).exit_code == 0
    shown = run.invoke(app, ["sim", "show", "--output", "json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.stdout)
    assert summary["fleet"] == "demo"
    assert {c["name"] for c in summary["clusters"]} >= {"eu-west-1", "us-east-1"}
    assert run.invoke(app, ["sim", "show"]).exit_code == 0


def test_faults_added_and_cleared_show_up_in_the_audit_log(run: CliRunner, tmp_path: Path) -> None:
    """A fault added from the CLI is audited; the JSON entries have the documented shape."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(run.invoke(app, ["sim", "init", "--example", "faults"]).stdout)
    assert run.invoke(app, ["sim", "load", str(fleet)]).exit_code == 0
    added = run.invoke(
        app,
        [
            *("sim", "fault", "add", "eu-west-1", "--kind", "meshPartition"),
            *("--at-sim-time", "0", "--peer", "us-east-1", "--duration", "30s"),
        ],
    )
    assert added.exit_code == 0, added.output
    cleared = run.invoke(app, ["sim", "fault", "clear", "eu-west-1"])
    assert cleared.exit_code == 0, cleared.output
    audit = run.invoke(app, ["sim", "audit", "--output", "json"])
    assert audit.exit_code == 0, audit.output
    entries = json.loads(audit.stdout)
    assert all(set(e) == {"at", "simTime", "cluster", "event", "details"} for e in entries)
    actions = [e["details"]["action"] for e in entries if e["event"] == "faultInjected"]
    assert actions[:2] == ["added", "fired"]
    assert "cleared" in actions
    table = run.invoke(app, ["sim", "audit", "--event", "faultInjected"])
    assert "faultInjected" in table.stdout


def test_a_broken_fleet_file_names_the_field_and_the_rule_and_exits_2(
    run: CliRunner, tmp_path: Path
) -> None:
    """No traceback: one line per broken field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: meshfleet.io/v1alpha1\nkind: SimulatedFleet\nmetadata: {name: x}\n"
        "spec:\n  clusters: [{name: alpha, kubernetesVersion: '1.32', ciliumVersion: '1.17',"
        " faults: [{kind: explode, on: join}]}]\n"
    )
    result = run.invoke(app, ["sim", "load", str(bad)])
    assert result.exit_code == 2
    assert "spec.clusters[0].faults[0].kind" in result.output
    assert "Traceback" not in result.output


def test_a_fault_without_a_trigger_is_refused_with_exit_2(run: CliRunner, tmp_path: Path) -> None:
    """Exactly one of --on and --at-sim-time."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(run.invoke(app, ["sim", "init", "--example", "minimal"]).stdout)
    assert run.invoke(app, ["sim", "load", str(fleet)]).exit_code == 0
    result = run.invoke(app, ["sim", "fault", "add", "alpha", "--kind", "hang"])
    assert result.exit_code == 2
    assert "exactly one of 'on' and 'atSimTime'" in result.output


def test_show_without_a_loaded_world_says_how_to_load_one(run: CliRunner) -> None:
    """A clear pointer to 'sim load' instead of an empty table or a crash."""
    result = run.invoke(app, ["sim", "show"])
    assert result.exit_code == 1
    assert "meshfleet sim load" in result.output


def test_audit_follow_prints_new_entries_as_json_lines(
    run: CliRunner, tmp_path: Path, world_dir: Path
) -> None:
    """A follower in another process sees entries written after it started."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(run.invoke(app, ["sim", "init", "--example", "minimal"]).stdout)
    assert run.invoke(app, ["sim", "load", str(fleet)]).exit_code == 0
    command = "from engine.runtime.cli import main; main()"
    arguments = ["sim", "audit", "--follow", "--output", "json", "--state-dir", str(world_dir)]
    follower = subprocess.Popen(
        [sys.executable, "-c", command, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        added = run.invoke(app, ["sim", "fault", "add", "beta", "--kind", "hang", "--on", "join"])
        assert added.exit_code == 0, added.output
        # The follower reads from the log's start, so however late it starts it prints
        # the entry: wait for that line, not for a guessed time.
        assert follower.stdout is not None
        first = follower.stdout.readline()
    finally:
        follower.terminate()
        out, _ = follower.communicate(timeout=10)
    events = [json.loads(line)["event"] for line in [first, *out.splitlines()] if line.strip()]
    assert events == ["faultInjected"]
