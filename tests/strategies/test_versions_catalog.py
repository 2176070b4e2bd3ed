"""Targets and hops checked against the release catalog, patches included."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from engine.domain.errors import InvalidInputError
from engine.domain.versions import Version
from engine.runtime.cli import app
from strategies import ReleaseCatalog, parse_catalog, plan
from tests.strategies.conftest import EXAMPLES, member, strategy

runner = CliRunner()
ONE_STAGE = {"name": "s", "groups": [{"name": "g"}]}


def plan_json(*extra: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(
        app,
        [
            "plan",
            "--fleet",
            str(EXAMPLES / "fleet.yaml"),
            "--strategy",
            str(EXAMPLES / "strategy-dag.yaml"),
            "--at",
            "2026-11-28T02:30:00Z",
            "-o",
            "json",
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.output)


def test_a_target_the_catalog_lacks_is_one_error_however_many_members() -> None:
    code, document = plan_json("--target", "1.40")
    assert code == 2
    errors = document["errors"]
    assert isinstance(errors, list)
    assert len(errors) == 1, errors
    assert "no Kubernetes 1.40" in errors[0]["message"]
    assert "1.31 to 1.36" in errors[0]["message"]


def test_a_patch_the_catalog_does_not_know_is_refused() -> None:
    code, document = plan_json("--target", "1.33.99")
    assert code == 2
    errors = document["errors"]
    assert isinstance(errors, list)
    assert len(errors) == 1, errors
    assert "1.33.99" in errors[0]["message"]
    assert "latest known patch" in errors[0]["message"]


def test_a_target_without_a_patch_resolves_to_the_latest_known_patch_in_the_plan(
    catalog: ReleaseCatalog,
) -> None:
    latest = catalog.latest_patch(Version.parse("1.33").minor_version)
    assert latest is not None
    assert latest.patch is not None
    code, document = plan_json("--target", "1.33")
    assert code == 0, document
    stages = document["stages"]
    assert isinstance(stages, list)
    moving = [
        m for s in stages for g in s["groups"] for m in g["members"] if m["state"] == "Planned"
    ]
    assert moving
    assert {m["to"]["kubernetesVersion"] for m in moving} == {str(latest)}


def test_an_explicit_patch_overrides_the_latest_for_this_run() -> None:
    code, document = plan_json("--target", "1.33.5")
    assert code == 0, document
    stages = document["stages"]
    assert isinstance(stages, list)
    tos = {m["to"]["kubernetesVersion"] for s in stages for g in s["groups"] for m in g["members"]}
    assert "1.33.5" in tos


def test_every_intermediate_hop_is_a_concrete_patch(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    result = plan(
        [member("old", group="g", kubernetes="1.31.4", cilium="1.16.16")],
        strategy(ONE_STAGE),
        Version.parse("1.33"),
        catalog,
        now,
        allow_multi_minor=True,
    )
    hops = [Version.parse(h.kubernetes_version) for h in result.members()[0].hops]
    assert all(hop.patch is not None for hop in hops), hops
    assert [h.minor_version for h in hops] == [(1, 32), (1, 33)]


def test_a_catalog_without_patches_keeps_minor_only_hops(now: dt.datetime) -> None:
    no_patches = parse_catalog(
        {
            "releases": [
                {"kubernetes": "1.32", "cilium": "1.17.9"},
                {"kubernetes": "1.33", "cilium": "1.17.9"},
            ]
        }
    )
    result = plan(
        [member("m", group="g")], strategy(ONE_STAGE), Version.parse("1.33"), no_patches, now
    )
    assert result.members()[0].to.kubernetes_version == "1.33"


def test_members_refused_for_the_same_reason_share_one_line(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    members = [member(f"m-{i}", group="g") for i in range(15)]
    with pytest.raises(InvalidInputError) as raised:
        plan(members, strategy(ONE_STAGE), Version.parse("1.36"), catalog, now)
    assert len(raised.value.errors) == 1, raised.value.errors
    assert "m-0" in raised.value.errors[0].path
    assert "15 members" in raised.value.errors[0].path


def test_a_catalog_with_a_negative_latest_patch_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="latestPatch"):
        parse_catalog({"releases": [{"kubernetes": "1.33", "cilium": "1.17.9", "latestPatch": -1}]})


def test_the_bundled_catalog_names_a_latest_patch_for_every_minor(
    catalog: ReleaseCatalog,
) -> None:
    assert all(release.latest_patch is not None for release in catalog.releases)
