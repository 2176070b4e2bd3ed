"""The stage DAG: resolved dependencies, cycles spelled out, a deterministic order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from engine.domain.strategy import StageSpec


class CycleError(ValueError):
    """The stages depend on each other in a circle; ``cycles`` spells each one out."""

    def __init__(self, cycles: list[list[str]]) -> None:
        self.cycles = cycles
        super().__init__("; ".join(format_cycle(cycle) for cycle in cycles))


def format_cycle(cycle: Sequence[str]) -> str:
    """['a', 'b'] -> 'a -> b -> a' (each stage depends on the next)."""
    return " -> ".join([*cycle, cycle[0]])


def resolve_dependencies(stages: Sequence[StageSpec]) -> dict[str, list[str]]:
    """Each stage's dependencies with the defaults applied.

    ``dependsOn`` absent means the stage before it (a plain list is a chain);
    the first stage depends on nothing; ``[]`` means nothing, so stages can run
    in parallel. Duplicates are dropped, order is kept.
    """
    resolved: dict[str, list[str]] = {}
    for index, stage in enumerate(stages):
        if stage.depends_on is None:
            deps = [stages[index - 1].name] if index > 0 else []
        else:
            deps = list(dict.fromkeys(stage.depends_on))
        resolved.setdefault(stage.name, deps)
    return resolved


def find_cycles(dependencies: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of stages, in declaration order.

    Only names that are keys count (unknown dependencies are reported elsewhere).
    """
    order = list(dependencies)
    position = {name: i for i, name in enumerate(order)}
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def edges(name: str) -> list[str]:
        return [d for d in dependencies[name] if d in position]

    # Iterative Tarjan, so a long chain of stages cannot hit the recursion limit.
    for root in order:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            name, child = work.pop()
            if child == 0:
                index_of[name] = low[name] = counter
                counter += 1
                stack.append(name)
                on_stack.add(name)
            successors = edges(name)
            if child < len(successors):
                work.append((name, child + 1))
                nxt = successors[child]
                if nxt not in index_of:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[name] = min(low[name], index_of[nxt])
                continue
            if low[name] == index_of[name]:
                component: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == name:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[name])

    cycles: list[list[str]] = []
    for component in components:
        members = set(component)
        start = min(component, key=position.__getitem__)
        if len(component) == 1 and start not in edges(start):
            continue
        cycles.append(_cycle_through(start, members, edges))
    cycles.sort(key=lambda cycle: position[cycle[0]])
    return cycles


def _cycle_through(start: str, members: set[str], edges: Callable[[str], list[str]]) -> list[str]:
    """A simple cycle from ``start`` back to itself inside one strongly connected group."""
    # Breadth-first inside the component finds a shortest way back to start.
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for name in frontier:
            for nxt in edges(name):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [name]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if nxt not in seen:
                    seen.add(nxt)
                    previous[nxt] = name
                    following.append(nxt)
        frontier = following
    return [start]  # pragma: no cover - a strongly connected group always leads back


def topological_order(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Stages so that each comes after everything it depends on.

    Ties go to the stage declared first, so the order is deterministic and a
    plain list keeps its written order. Raise CycleError when there is none.
    """
    cycles = find_cycles(dependencies)
    if cycles:
        raise CycleError(cycles)
    order = list(dependencies)
    done: set[str] = set()
    result: list[str] = []
    while len(result) < len(order):
        for name in order:
            if name not in done and all(
                d in done or d not in dependencies for d in dependencies[name]
            ):
                done.add(name)
                result.append(name)
                break
    return result


def ancestors(dependencies: Mapping[str, Sequence[str]], name: str) -> set[str]:
    """Every stage that must complete before ``name`` starts (transitively)."""
    found: set[str] = set()
    pending = [d for d in dependencies.get(name, ()) if d in dependencies]
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending.extend(d for d in dependencies[current] if d in dependencies)
    return found
