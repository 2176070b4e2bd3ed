"""No module of ours imports itself back, however indirectly.

The import-linter contract ``acyclic_siblings`` (pyproject.toml) keeps the
siblings of each package acyclic; it cannot see a package's ``__init__`` and
one of its own modules importing each other, nor a cycle across our top-level
packages. This walks the whole module graph (lazy and ``TYPE_CHECKING``
imports included, as import-linter counts them) and names every cycle.
"""

from __future__ import annotations

import grimp

PACKAGES = ("meshfleet", "engine", "workflows", "activities", "strategies")


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: each group of modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(sorted(group))
    return groups


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycles = [group for group in _strongly_connected(graph) if len(group) > 1]
    assert cycles == [["a", "b", "c"]]


def test_no_module_of_ours_is_part_of_an_import_cycle() -> None:
    imports = grimp.build_graph(*PACKAGES)
    ours = {m for m in imports.modules if m.split(".")[0] in PACKAGES}
    graph = {m: imports.find_modules_directly_imported_by(m) & ours for m in ours}
    cycles = [group for group in _strongly_connected(graph) if len(group) > 1]
    assert cycles == [], f"import cycles: {cycles}"
