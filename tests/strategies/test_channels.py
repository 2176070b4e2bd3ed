"""Auto-upgrade channels: one minor at a time, never down, lowest members first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain.schedule import Channel, MemberTarget
from engine.domain.strategy import GateType
from engine.domain.versions import Minor, Version
from strategies import (
    ChannelError,
    ReleaseCatalog,
    bundled_catalog,
    parse_strategy,
    resolve_channel,
    with_start_gate,
)

CATALOG = bundled_catalog()  # 1.31 .. 1.36


def members(*versions: str) -> list[MemberTarget]:
    return [
        MemberTarget(name=f"m{index}", kubernetes_version=version)
        for index, version in enumerate(versions)
    ]


def test_rapid_is_the_newest_and_stable_the_minor_below() -> None:
    assert resolve_channel(Channel.RAPID, members("1.35.2"), CATALOG).target == Minor(1, 36)
    assert resolve_channel(Channel.STABLE, members("1.34.1"), CATALOG).target == Minor(1, 35)


def test_members_at_the_channel_version_or_above_have_nothing_to_do() -> None:
    resolution = resolve_channel(Channel.STABLE, members("1.35.1", "1.36.0"), CATALOG)
    assert resolution.target is None
    assert resolution.upgrade_versions == []
    assert "nothing to do" in resolution.message


def test_a_member_two_minors_behind_is_taken_one_minor() -> None:
    resolution = resolve_channel(Channel.RAPID, members("1.34.3", "1.34.1"), CATALOG)
    assert resolution.target == Minor(1, 35)
    assert [m.target for m in resolution.members] == ["1.35", "1.35"]


def test_the_lowest_members_go_first_and_the_others_follow_later() -> None:
    resolution = resolve_channel(
        Channel.TARGET_KUBERNETES_VERSION, members("1.33.4", "1.34.2"), CATALOG, "1.35"
    )
    assert resolution.target == Minor(1, 34)
    assert [m.target for m in resolution.members] == ["1.34", None]
    assert "m1 follow on a later trigger" in resolution.message


def test_members_spread_over_two_minors_cannot_share_one_run() -> None:
    with pytest.raises(ChannelError, match="would have to move down"):
        resolve_channel(Channel.RAPID, members("1.32.1", "1.34.0"), CATALOG)


def test_patch_has_nothing_to_do_while_the_catalog_lists_minors_only() -> None:
    resolution = resolve_channel(Channel.PATCH, members("1.32.1", "1.34.0"), CATALOG)
    assert resolution.target is None
    assert "minors only" in resolution.message


def test_a_target_the_catalog_lacks_is_an_error() -> None:
    with pytest.raises(ChannelError, match=r"no Kubernetes 1\.40"):
        resolve_channel(Channel.TARGET_KUBERNETES_VERSION, members("1.33.0"), CATALOG, "1.40")


def test_stable_needs_two_minors_in_the_catalog() -> None:
    single = ReleaseCatalog.model_validate(
        {"releases": [{"kubernetes": "1.33", "cilium": "1.17.9"}]}
    )
    with pytest.raises(ChannelError, match="two minors"):
        resolve_channel(Channel.STABLE, members("1.33.0"), single)


def test_start_gate_goes_before_every_stage_that_depends_on_nothing() -> None:
    strategy = parse_strategy(
        {
            "apiVersion": "meshfleet.io/v1alpha1",
            "kind": "UpdateStrategy",
            "metadata": {"name": "dag"},
            "spec": {
                "stages": [
                    {"name": "a", "groups": [{"name": "g1"}]},
                    {"name": "b", "dependsOn": [], "groups": [{"name": "g2"}]},
                    {"name": "c", "groups": [{"name": "g3"}]},
                ]
            },
        }
    )
    gated = with_start_gate(strategy, "start")
    firsts = {
        s.name: s.before_gates[0].display_name if s.before_gates else None
        for s in gated.spec.stages
    }
    assert firsts == {"a": "start", "b": "start", "c": None}
    assert gated.spec.stages[0].before_gates[0].type is GateType.APPROVAL
    assert strategy.spec.stages[0].before_gates == []  # the profile's own strategy is untouched


MINORS = st.integers(32, 36)


@settings(max_examples=300, deadline=None)
@given(
    minors=st.lists(MINORS, min_size=1, max_size=6),
    channel=st.sampled_from(list(Channel)),
    wanted=st.integers(31, 36),
)
def test_never_down_never_more_than_one_minor(
    minors: list[int], channel: Channel, wanted: int
) -> None:
    fleet = members(*[f"1.{minor}.2" for minor in minors])
    target = f"1.{wanted}" if channel is Channel.TARGET_KUBERNETES_VERSION else None
    try:
        resolution = resolve_channel(channel, fleet, CATALOG, target)
    except ChannelError:
        # Only when one run cannot take everyone: the members span more than one minor.
        assert max(minors) - min(minors) >= 2
        return
    if resolution.target is None:
        assert all(m.target is None for m in resolution.members)
        return
    for member in resolution.members:
        current = Version.parse(member.kubernetes_version).minor_version
        assert resolution.target >= current, "a member would move down"
        if member.target is not None:
            assert member.target == str(resolution.target)
            assert resolution.target == current.next(), "more than one minor"
    assert any(m.target is not None for m in resolution.members)
