"""Validation and planning: every problem at once, and plans that say what a run will do."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from engine.domain.errors import InvalidInputError
from engine.domain.plan import PlannedMemberState
from engine.domain.runspec import RunSpec, UpgradeType
from engine.domain.versions import Version
from engine.runtime.fleet_file import load_fleet
from strategies import (
    ReleaseCatalog,
    default_strategy,
    load_strategy,
    parse_catalog,
    parse_strategy,
    plan,
    plan_hash,
    strategy_to_fleet,
    validate_strategy,
)
from strategies.files import read_document
from tests.strategies.conftest import EXAMPLES, member, strategy

TARGET = Version.parse("1.33")


def messages(error: InvalidInputError) -> list[str]:
    return [str(e) for e in error.errors]


def test_every_rule_the_strategy_breaks_is_reported_with_its_path() -> None:
    broken = parse_strategy(
        {
            "apiVersion": "meshfleet.io/v1alpha1",
            "kind": "UpdateStrategy",
            "metadata": {"name": "Bad_Name"},
            "spec": {
                "stages": [
                    {
                        "name": "one",
                        "maxConcurrency": "0",
                        "afterGates": [
                            {"type": "ScheduledStart", "startDay": "Monday", "startTime": "25:00"}
                        ],
                        "groups": [{"name": "g", "maxAllowedFailures": "101%"}],
                    },
                    {"name": "one", "dependsOn": ["nowhere"], "groups": [{"name": "g"}]},
                ]
            },
        },
        check_rules=False,
    )
    paths = {e.path for e in validate_strategy(broken)}
    assert {
        "metadata.name",
        "spec.stages[0].maxConcurrency",
        "spec.stages[0].afterGates[0].type",
        "spec.stages[0].afterGates[0].startTime",
        "spec.stages[0].groups[0].maxAllowedFailures",
        "spec.stages[1].name",
        "spec.stages[1].dependsOn[0]",
        "spec.stages[1].groups[0].name",
    } <= paths


def test_more_than_fifty_groups_in_a_stage_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="at most 50"):
        strategy({"name": "big", "groups": [{"name": f"g{i}"} for i in range(51)]})


def test_a_utc_offset_beyond_fourteen_hours_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="-14:00 and \\+14:00"):
        strategy(
            {
                "name": "s",
                "beforeGates": [
                    {
                        "type": "ScheduledStart",
                        "startDay": "Monday",
                        "startTime": "09:00",
                        "utcOffset": "+14:30",
                    }
                ],
                "groups": [{"name": "g"}],
            }
        )


def test_a_cycle_an_unplaced_member_and_a_two_minor_jump_are_reported_together(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    looping = parse_strategy(
        {
            "apiVersion": "meshfleet.io/v1alpha1",
            "kind": "UpdateStrategy",
            "metadata": {"name": "loop"},
            "spec": {
                "stages": [
                    {"name": "a", "dependsOn": ["b"], "groups": [{"name": "eu"}]},
                    {"name": "b", "groups": [{"name": "us"}]},
                ]
            },
        },
        check_rules=False,
    )
    members = [
        member("eu-1", group="eu", kubernetes="1.31.4", cilium="1.16.16"),
        member("us-1", group="us"),
        member("lost-1", group="nowhere"),
    ]
    with pytest.raises(InvalidInputError) as raised:
        plan(members, looping, TARGET, catalog, now)
    text = "\n".join(messages(raised.value))
    assert "a -> b -> a" in text
    assert "'lost-1' is in no group" in text
    assert "eu-1: runs Kubernetes 1.31.4: 1.33 is 2 minors ahead" in text


def test_a_member_two_groups_claim_is_reported_with_both_groups(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    twice = strategy(
        {"name": "s1", "groups": [{"name": "eu", "selector": "region=eu"}]},
        {"name": "s2", "groups": [{"name": "ring", "selector": "ring=canary"}]},
    )
    members = [member("eu-1", labels={"region": "eu", "ring": "canary"})]
    with pytest.raises(InvalidInputError) as raised:
        plan(members, twice, TARGET, catalog, now)
    assert messages(raised.value) == [
        "members.eu-1: member 'eu-1' is matched by 2 groups: group 'eu' (stage 's1'), "
        "group 'ring' (stage 's2') (a member belongs to exactly one group)"
    ]


def test_an_empty_group_is_a_warning_not_an_error(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    result = plan(
        [member("eu-1", group="eu")],
        strategy({"name": "s", "groups": [{"name": "eu"}, {"name": "us"}]}),
        TARGET,
        catalog,
        now,
    )
    assert [w.message for w in result.warnings] == ["group 'us' (stage 's') matches no member"]


def test_a_multi_minor_jump_becomes_hops_with_each_bundled_cilium_when_allowed(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    result = plan(
        [member("old", group="g", kubernetes="1.31.4", cilium="1.16.16"), member("new", group="g")],
        strategy({"name": "s", "groups": [{"name": "g"}]}),
        TARGET,
        catalog,
        now,
        allow_multi_minor=True,
    )
    old = next(m for m in result.members() if m.name == "old")
    assert [(h.kubernetes_version, h.cilium_version) for h in old.hops] == [
        ("1.32.10", "1.17.9"),
        ("1.33.6", "1.17.9"),
    ]


def test_a_member_at_the_target_is_skipped_and_one_above_it_is_refused(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    one_stage = strategy({"name": "s", "groups": [{"name": "g"}]})
    result = plan([member("done", group="g", kubernetes="1.33.1")], one_stage, TARGET, catalog, now)
    assert result.members()[0].state is PlannedMemberState.SKIPPED
    assert result.members()[0].hops == []
    with pytest.raises(InvalidInputError, match="never move down"):
        plan([member("ahead", group="g", kubernetes="1.34.0")], one_stage, TARGET, catalog, now)


def test_a_plan_that_would_spread_cilium_over_two_minors_is_refused_naming_stage_and_members(
    now: dt.datetime,
) -> None:
    catalog = parse_catalog(
        {
            "releases": [
                {"kubernetes": "1.32", "cilium": "1.17.9"},
                {"kubernetes": "1.33", "cilium": "1.18.6"},
                {"kubernetes": "1.31", "cilium": "1.16.16"},
            ]
        }
    )
    members = [
        member("ahead", group="first"),
        member("behind", group="second", kubernetes="1.32.1", cilium="1.16.16"),
    ]
    chain = strategy(
        {"name": "one", "groups": [{"name": "first"}]},
        {"name": "two", "groups": [{"name": "second"}]},
    )
    with pytest.raises(InvalidInputError) as raised:
        plan(members, chain, TARGET, catalog, now)
    (problem,) = messages(raised.value)
    assert "stage 'one'" in problem
    assert "'ahead'" in problem
    assert "'behind'" in problem


def test_members_go_open_window_first_then_soon_then_none_then_closed_then_by_name(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    saturday = {
        "schedule": {"weekly": {"dayOfWeek": "Saturday"}},
        "durationHours": 4,
        "startTime": "02:00",
    }
    soon = {**saturday, "startTime": "05:00"}
    closed = {**saturday, "schedule": {"weekly": {"dayOfWeek": "Wednesday"}}}
    members = [
        member("a-closed", group="g", window=closed),
        member("b-none", group="g"),
        member("c-soon", group="g", window=soon),
        member("d-open", group="g", window=saturday),
        member("a-none", group="g"),
    ]
    result = plan(members, strategy({"name": "s", "groups": [{"name": "g"}]}), TARGET, catalog, now)
    assert [m.name for m in result.members()] == [
        "d-open",
        "c-soon",
        "a-none",
        "b-none",
        "a-closed",
    ]


def test_effective_limits_are_whole_numbers_with_the_declared_values_alongside(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    members = [member(f"m-{i}", group="g") for i in range(10)]
    result = plan(
        members,
        strategy(
            {
                "name": "s",
                "maxConcurrency": "30%",
                "maxAllowedFailures": "15%",
                "groups": [{"name": "g", "maxConcurrency": "50%", "maxAllowedFailures": "1"}],
            }
        ),
        TARGET,
        catalog,
        now,
    )
    stage = result.to_json_dict()["stages"][0]  # type: ignore[index]
    assert stage["maxConcurrency"] == 3
    assert stage["maxAllowedFailures"] == 2
    assert stage["declared"] == {"maxConcurrency": "30%", "maxAllowedFailures": "15%"}
    group = stage["groups"][0]
    assert group["maxConcurrency"] == 3
    assert group["maxAllowedFailures"] == 1


def test_the_plan_hash_is_deterministic_and_covers_the_plan(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    fleet = load_fleet(EXAMPLES / "fleet.yaml").spec.clusters
    ring = load_strategy(EXAMPLES / "strategy-ring.yaml")
    first = plan(fleet, ring, TARGET, catalog, now)
    again = plan(fleet, ring, TARGET, catalog, now)
    assert first.plan_hash == again.plan_hash == plan_hash(first)
    assert len(first.plan_hash) == 64
    other = plan(fleet, ring, Version.parse("1.33.3"), catalog, now)
    assert other.plan_hash != first.plan_hash
    json.dumps(first.to_json_dict())


@pytest.mark.parametrize("name", ["strategy-ring.yaml", "strategy-dag.yaml", "strategy-fleet.json"])
def test_every_example_strategy_plans_cleanly_against_the_example_fleet(
    name: str, catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    fleet = load_fleet(EXAMPLES / "fleet.yaml").spec.clusters
    result = plan(fleet, load_strategy(EXAMPLES / name), TARGET, catalog, now)
    assert sorted(m.name for m in result.members()) == sorted(c.name for c in fleet)
    assert result.warnings == []


def test_the_dag_example_runs_the_two_regions_in_parallel_after_the_canary(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    fleet = load_fleet(EXAMPLES / "fleet.yaml").spec.clusters
    result = plan(fleet, load_strategy(EXAMPLES / "strategy-dag.yaml"), TARGET, catalog, now)
    assert [(s.name, s.depends_on) for s in result.stages] == [
        ("canary", []),
        ("europe", ["canary"]),
        ("americas", ["canary"]),
        ("asia-pacific", ["europe", "americas"]),
    ]


def test_a_fleet_strategy_imports_and_exports_back_to_the_same_stages() -> None:
    document = read_document(EXAMPLES / "strategy-fleet.json")
    imported = parse_strategy(document)
    assert imported.metadata.name == "staged-regions"
    exported = strategy_to_fleet(imported)
    assert exported.not_exported == []
    assert isinstance(document, dict)
    original = document["strategy"]["stages"]
    assert [s["name"] for s in exported.document["strategy"]["stages"]] == [
        s["name"] for s in original
    ]
    assert exported.document["strategy"]["stages"][1]["afterStageWaitInSeconds"] == 3600
    assert exported.document["strategy"]["stages"][1]["beforeGates"] == original[1]["beforeGates"]


def test_exporting_a_dag_says_what_does_not_fit_in_fleet() -> None:
    exported = strategy_to_fleet(load_strategy(EXAMPLES / "strategy-dag.yaml"))
    paths = [e.path for e in exported.not_exported]
    assert "spec.stages[2].dependsOn" in paths  # americas runs after europe in Fleet
    assert "spec.stages[0].groups[0].members" in paths


def test_a_document_of_neither_kind_is_refused_clearly() -> None:
    with pytest.raises(InvalidInputError, match="not a strategy"):
        parse_strategy({"hello": "world"})


def test_without_a_strategy_every_member_updates_one_by_one(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    result = plan([member("b"), member("a")], default_strategy(), TARGET, catalog, now)
    (stage,) = result.stages
    assert stage.groups[0].max_concurrency == 1
    assert stage.member_names() == ["a", "b"]


def test_a_run_spec_needs_a_version_unless_it_only_updates_node_images() -> None:
    with pytest.raises(ValidationError, match="needs kubernetesVersion"):
        RunSpec.model_validate({"network": "prod-mesh"})
    with pytest.raises(ValidationError, match="must not set kubernetesVersion"):
        RunSpec.model_validate(
            {"network": "prod-mesh", "upgradeType": "NodeImageOnly", "kubernetesVersion": "1.33"}
        )
    with pytest.raises(ValidationError, match="not both"):
        RunSpec.model_validate(
            {
                "network": "prod-mesh",
                "kubernetesVersion": "1.33",
                "strategyRef": "rings",
                "strategy": default_strategy().to_json_dict(),
            }
        )
    spec = RunSpec.model_validate(
        {"network": "prod-mesh", "kubernetesVersion": "1.33", "allowMultiMinor": True}
    )
    assert spec.upgrade_type is UpgradeType.FULL
