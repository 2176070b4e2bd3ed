"""``meshfleet plan`` end to end through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.runtime.cli import app
from tests.strategies.conftest import EXAMPLES

runner = CliRunner()
EXAMPLE_STRATEGIES = ["strategy-ring.yaml", "strategy-dag.yaml", "strategy-fleet.json"]
AT = "2026-11-28T02:30:00Z"


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["plan", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def plan_args(strategy: Path, *extra: str, fleet: Path = EXAMPLES / "fleet.yaml") -> list[str]:
    return [
        "--fleet",
        str(fleet),
        "--strategy",
        str(strategy),
        "--target",
        "1.33",
        "--at",
        AT,
        *extra,
    ]


@pytest.mark.parametrize("name", EXAMPLE_STRATEGIES)
def test_each_example_prints_a_table_with_every_stage_and_the_plan_hash(name: str) -> None:
    code, output = invoke(*plan_args(EXAMPLES / name))
    assert code == 0, output
    assert "Stage canary" in output
    assert "plan hash:" in output
    assert "eu-west-1" in output


@pytest.mark.parametrize("name", EXAMPLE_STRATEGIES)
def test_each_example_prints_json_in_the_documented_shape(name: str) -> None:
    code, output = invoke(*plan_args(EXAMPLES / name, "--output", "json"))
    assert code == 0, output
    document = json.loads(output)
    assert set(document) == {"stages", "warnings", "planHash", "undrainable"}
    stage = document["stages"][0]
    assert {
        "name",
        "dependsOn",
        "maxConcurrency",
        "maxAllowedFailures",
        "afterStageWaitSeconds",
        "beforeGates",
        "afterGates",
        "groups",
    } <= set(stage)
    assert isinstance(stage["maxConcurrency"], int)
    member = stage["groups"][0]["members"][0]
    assert set(member) == {"name", "state", "from", "to", "hops"}
    assert member["from"]["kubernetesVersion"].startswith("1.32")
    assert member["to"] == {"kubernetesVersion": "1.33.6", "ciliumVersion": "1.17.9"}


@pytest.mark.parametrize("name", EXAMPLE_STRATEGIES)
def test_each_example_prints_the_stage_dag_in_mermaid(name: str) -> None:
    code, output = invoke(*plan_args(EXAMPLES / name, "--output", "mermaid"))
    assert code == 0, output
    assert output.startswith("flowchart TD")
    assert "s0 --> s1" in output


def test_the_same_inputs_print_the_same_plan_hash() -> None:
    first = json.loads(invoke(*plan_args(EXAMPLES / "strategy-dag.yaml", "-o", "json"))[1])
    second = json.loads(invoke(*plan_args(EXAMPLES / "strategy-dag.yaml", "-o", "json"))[1])
    assert first["planHash"] == second["planHash"]


@pytest.fixture
def broken_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A strategy with a cycle, and a fleet with an unplaced member and a 1.31 member."""
    strategy = tmp_path / "strategy.yaml"
    strategy.write_text(
        """
apiVersion: meshfleet.io/v1alpha1
kind: UpdateStrategy
metadata: {name: broken}
spec:
  stages:
    - {name: first, dependsOn: [second], groups: [{name: eu}]}
    - {name: second, groups: [{name: us}]}
""",
        encoding="utf-8",
    )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        """
apiVersion: meshfleet.io/v1alpha1
kind: SimulatedFleet
metadata: {name: broken}
spec:
  clusters:
    - {name: eu-1, updateGroup: eu, kubernetesVersion: "1.31.4", ciliumVersion: "1.16.16"}
    - {name: us-1, updateGroup: us, kubernetesVersion: "1.32.6", ciliumVersion: "1.17.9"}
    - {name: stray-1, updateGroup: nowhere, kubernetesVersion: "1.32.6", ciliumVersion: "1.17.9"}
""",
        encoding="utf-8",
    )
    return strategy, fleet


def test_a_cycle_an_unplaced_member_and_a_two_minor_jump_print_together_and_exit_2(
    broken_inputs: tuple[Path, Path],
) -> None:
    strategy, fleet = broken_inputs
    code, output = invoke(*plan_args(strategy, fleet=fleet))
    assert code == 2
    assert "first -> second -> first" in output
    assert "'stray-1' is in no group" in output
    assert "2 minors ahead" in output
    assert "Traceback" not in output


def test_with_json_output_the_errors_come_as_path_and_message(
    broken_inputs: tuple[Path, Path],
) -> None:
    strategy, fleet = broken_inputs
    code, output = invoke(*plan_args(strategy, "--output", "json", fleet=fleet))
    assert code == 2
    errors = json.loads(output)["errors"]
    assert len(errors) == 3
    assert all(set(error) == {"path", "message"} for error in errors)
    assert {e["path"] for e in errors} == {
        "spec.stages[0].dependsOn",
        "members.stray-1",
        "members.eu-1",
    }


def test_allowing_multi_minor_jumps_plans_consecutive_hops(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "apiVersion: meshfleet.io/v1alpha1\nkind: SimulatedFleet\nmetadata: {name: f}\n"
        "spec:\n  clusters:\n"
        '    - {name: old-1, updateGroup: canary, kubernetesVersion: "1.31.4", '
        'ciliumVersion: "1.16.16"}\n',
        encoding="utf-8",
    )
    strategy = tmp_path / "s.yaml"
    strategy.write_text(
        "apiVersion: meshfleet.io/v1alpha1\nkind: UpdateStrategy\nmetadata: {name: s}\n"
        "spec:\n  stages: [{name: only, groups: [{name: canary}]}]\n",
        encoding="utf-8",
    )
    code, output = invoke(*plan_args(strategy, "--allow-multi-minor", "-o", "json", fleet=fleet))
    assert code == 0, output
    hops = json.loads(output)["stages"][0]["groups"][0]["members"][0]["hops"]
    assert [h["kubernetesVersion"] for h in hops] == ["1.32.10", "1.33.6"]


def test_fleet_and_network_together_are_refused_naming_the_rule() -> None:
    code, output = invoke(
        "--fleet",
        str(EXAMPLES / "fleet.yaml"),
        "--network",
        "prod-mesh",
        "--strategy",
        str(EXAMPLES / "strategy-ring.yaml"),
        "--target",
        "1.33",
    )
    assert code == 2
    assert "give exactly one of --fleet and --network" in output


def test_unreadable_files_and_a_bad_target_are_all_reported(tmp_path: Path) -> None:
    code, output = invoke(
        "--fleet",
        str(tmp_path / "missing.yaml"),
        "--strategy",
        str(tmp_path / "nope.yaml"),
        "--target",
        "one.thirty-three",
        "-o",
        "json",
    )
    assert code == 2
    paths = [e["path"] for e in json.loads(output)["errors"]]
    assert len(paths) == 3
    assert "--target" in paths


def _strategy_with_soak(tmp_path: Path, soak: str) -> Path:
    strategy = tmp_path / "soak.yaml"
    strategy.write_text(
        "apiVersion: meshfleet.io/v1alpha1\nkind: UpdateStrategy\nmetadata: {name: s}\n"
        f"spec:\n  stages: [{{name: all, afterStageWait: {soak}, "
        "groups: [{name: everyone, selector: region}]}]\n",
        encoding="utf-8",
    )
    return strategy


@pytest.mark.parametrize("soak", ["9223372036854775808", "1.0e+400", "-5", '"99999999999999d"'])
def test_a_duration_out_of_range_is_a_field_error_with_exit_2(tmp_path: Path, soak: str) -> None:
    code, output = invoke(*plan_args(_strategy_with_soak(tmp_path, soak), "-o", "json"))
    assert code == 2, output
    errors = json.loads(output)["errors"]
    assert [e["path"].rsplit(": ", 1)[-1] for e in errors] == ["spec.stages[0].afterStageWait"]
    assert "at most 365d" in errors[0]["message"] or "negative" in errors[0]["message"]
