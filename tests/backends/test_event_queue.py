"""The simulator's event queue: a heap that pops by time, then by order of scheduling."""

from __future__ import annotations

import json

from activities.backends.simulated import World
from activities.backends.simulated.event_queue import Scheduled, in_order, pop_due, push
from tests.backends.samples.record_world import BEFORE


def scheduled(at: float, seq: int) -> Scheduled:
    """A tick due at ``at``, scheduled ``seq``-th."""
    return Scheduled(at=at, seq=seq, kind="tick")


def test_due_transitions_pop_by_time_then_in_the_order_they_were_scheduled() -> None:
    """Equal times keep their scheduling order; later ones stay queued."""
    events: list[Scheduled] = []
    for seq, at in enumerate([5.0, 3.0, 5.0, 9.0, 3.0, 5.0, 1.0], start=1):
        push(events, scheduled(at, seq))
    due = pop_due(events, 5.0)
    assert [(e.at, e.seq) for e in due] == [(1, 7), (3, 2), (3, 5), (5, 1), (5, 3), (5, 6)]
    assert [(e.at, e.seq) for e in events] == [(9, 4)]


def test_a_queue_stored_sorted_pops_as_a_heap() -> None:
    """A world written sorted (as every version stores it) needs no re-ordering to pop."""
    events = [scheduled(1.0, 4), scheduled(2.0, 1), scheduled(2.0, 3), scheduled(7.0, 2)]
    queue = list(events)
    push(queue, scheduled(2.0, 5))
    assert pop_due(queue, 10.0) == [*events[:3], scheduled(2.0, 5), events[3]]


def test_a_world_stores_its_queue_sorted_whatever_the_heap_order() -> None:
    """The document lists transitions by (at, seq), as it always did."""
    world = World.model_validate_json(BEFORE.read_text())
    for seq, at in enumerate([900.0, 45.0, 700.0, 45.0], start=1_000):
        push(world.events, scheduled(at, seq))
    stored = json.loads(world.model_dump_json(by_alias=True))["events"]
    assert [(e["at"], e["seq"]) for e in stored] == [(e.at, e.seq) for e in in_order(world.events)]
    assert [(e["at"], e["seq"]) for e in stored] == sorted((e["at"], e["seq"]) for e in stored)
    assert [(e.at, e.seq) for e in world.events] != [(e["at"], e["seq"]) for e in stored]
