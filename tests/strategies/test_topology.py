"""The stage DAG: defaults for dependsOn, cycles spelled out, a deterministic order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain.strategy import GroupSpec, StageSpec
from strategies import CycleError, find_cycles, resolve_dependencies, topological_order
from strategies.topology import format_cycle


def stage(name: str, depends_on: list[str] | None = None) -> StageSpec:
    return StageSpec(name=name, depends_on=depends_on, groups=[GroupSpec(name=f"g-{name}")])


def test_absent_depends_on_means_the_previous_stage_and_empty_means_none() -> None:
    stages = [stage("a"), stage("b"), stage("c", []), stage("d", ["a", "c"])]
    assert resolve_dependencies(stages) == {"a": [], "b": ["a"], "c": [], "d": ["a", "c"]}


def test_a_plain_list_keeps_its_written_order() -> None:
    deps = resolve_dependencies([stage("z"), stage("y"), stage("x")])
    assert topological_order(deps) == ["z", "y", "x"]


def test_a_cycle_is_spelled_out_stage_by_stage() -> None:
    deps = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    cycles = find_cycles(deps)
    assert len(cycles) == 1
    assert format_cycle(cycles[0]) == "a -> c -> b -> a"
    with pytest.raises(CycleError, match="a -> c -> b -> a"):
        topological_order(deps)


def test_a_stage_that_depends_on_itself_is_a_cycle() -> None:
    assert find_cycles({"a": ["a"]}) == [["a"]]


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """Random DAGs: each stage may depend only on stages declared before it."""
    count = draw(st.integers(min_value=1, max_value=12))
    names = [f"s{i}" for i in range(count)]
    order = draw(st.permutations(names))
    return {
        name: draw(st.lists(st.sampled_from(order[:i]), unique=True)) if i else []
        for i, name in enumerate(order)
    }


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_stage_comes_after_everything_it_depends_on(deps: dict[str, list[str]]) -> None:
    order = topological_order(deps)
    assert sorted(order) == sorted(deps)
    position = {name: i for i, name in enumerate(order)}
    for name, dependencies in deps.items():
        assert all(position[d] < position[name] for d in dependencies)
    assert find_cycles(deps) == []


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_adding_a_back_edge_makes_a_cycle_that_really_is_one(
    deps: dict[str, list[str]], data: st.DataObject
) -> None:
    names = list(deps)
    if len(names) < 2:
        return
    later = data.draw(st.sampled_from(names[1:]))
    earlier = data.draw(st.sampled_from(names[: names.index(later)]))
    deps[earlier] = [*deps[earlier], later]
    if earlier not in _reachable(deps, later):
        return  # the new edge closes no loop
    cycles = find_cycles(deps)
    assert cycles
    for cycle in cycles:
        for current, following in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            assert following in deps[current]


def _reachable(deps: dict[str, list[str]], start: str) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        for nxt in deps[name]:
            if nxt not in seen:
                seen.add(nxt)
                pending.append(nxt)
    return seen
