"""Rules the run re-checks while it runs (pure: the run workflow calls them).

The planner proves a whole plan safe before the run starts; these functions
re-check one decision at the moment it is taken, from the members' states as
the run knows them then.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from engine.domain.plan import VersionPair
from engine.domain.versions import Version


@dataclass(frozen=True)
class MemberVersions:
    """What the run knows of one member right now."""

    name: str
    current: VersionPair
    target: VersionPair
    #: True while its update may be anywhere between ``current`` and ``target``.
    moving: bool


def _cilium_minor(pair: VersionPair) -> tuple[int, int]:
    return _major_minor(pair.cilium_version)


@functools.lru_cache(maxsize=256)
def _major_minor(text: str) -> tuple[int, int]:
    # Cached: a run re-checks every member's versions for each member it starts.
    version = Version.parse(text)
    return (version.major, version.minor)


def skew_blocker(candidate: str, members: Iterable[MemberVersions]) -> str | None:
    """Why starting ``candidate`` now could put two members more than one Cilium minor apart.

    Every moving member (and the candidate) counts as possibly at either end
    of its update; the others at their current version. None when it is safe.
    """
    lowest: tuple[tuple[int, int], str] | None = None
    highest: tuple[tuple[int, int], str] | None = None
    for member in members:
        ends = [member.current]
        if member.moving or member.name == candidate:
            ends.append(member.target)
        for pair in ends:
            minor = _cilium_minor(pair)
            if lowest is None or minor < lowest[0]:
                lowest = (minor, member.name)
            if highest is None or minor > highest[0]:
                highest = (minor, member.name)
    if lowest is None or highest is None:
        return None
    (lo_major, lo_minor), lo_name = lowest
    (hi_major, hi_minor), hi_name = highest
    if lo_major != hi_major or hi_minor - lo_minor > 1:
        return (
            f"version skew: starting {candidate} could put {lo_name} on Cilium "
            f"{lo_major}.{lo_minor} and {hi_name} on {hi_major}.{hi_minor} in the mesh at once "
            "(at most one minor apart)"
        )
    return None
