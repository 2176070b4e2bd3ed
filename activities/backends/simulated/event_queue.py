"""The simulated world's event queue: transitions due at a simulated time, in order.

The world stores *when* things will change (an operation completing, a window
opening or closing, an export reaching the peers, a fault firing) as
``Scheduled`` items in ``World.events``. That list is a binary heap on
``(at, seq)``: the next due is always first, and ``seq`` (the world's next id,
taken when the item is scheduled) breaks ties, so transitions due at the same
time apply in the order they were scheduled. A list sorted on ``(at, seq)`` (how
the world is stored) is a heap as it stands.
"""

from __future__ import annotations

import heapq
from typing import Any

from pydantic import Field

from engine.domain.model import DomainModel


class Scheduled(DomainModel):
    """A transition due at ``at`` (ties broken by ``seq``, the order of scheduling)."""

    at: float
    seq: int
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)

    def __lt__(self, other: Scheduled) -> bool:
        """Due earlier, or at the same time and scheduled earlier (the heap's order)."""
        return (self.at, self.seq) < (other.at, other.seq)


def push(events: list[Scheduled], item: Scheduled) -> None:
    """Add ``item`` to the queue."""
    heapq.heappush(events, item)


def is_due(events: list[Scheduled], t: float) -> bool:
    """Whether a transition is due at or before ``t``."""
    return bool(events) and events[0].at <= t


def pop_due(events: list[Scheduled], t: float) -> list[Scheduled]:
    """Take every transition due at or before ``t``, in the order they apply."""
    due: list[Scheduled] = []
    while events and events[0].at <= t:
        due.append(heapq.heappop(events))
    return due


def in_order(events: list[Scheduled]) -> list[Scheduled]:
    """The queue as a list sorted by when its transitions apply (how it is stored)."""
    return sorted(events, key=lambda item: (item.at, item.seq))
