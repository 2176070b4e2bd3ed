"""Version rules: each member's path from its versions to the target, and the skew check.

Control planes move one minor at a time and never down; a jump of two or more
minors is refused unless the run allows it explicitly, and then becomes
consecutive hops, each with the Cilium version the catalog bundles with it.
Mesh members must stay within one Cilium minor of each other at every moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.domain.member import Member
from engine.domain.plan import MemberPlan, Plan, PlannedMemberState, VersionPair
from engine.domain.versions import Minor, Version
from strategies.catalog import ReleaseCatalog
from strategies.topology import ancestors


class VersionPathError(ValueError):
    """The member cannot reach the target under the version rules; the message says why."""


@dataclass(frozen=True)
class VersionPath:
    """Where a member starts, where it ends, and the hops in between."""

    state: PlannedMemberState
    start: VersionPair
    end: VersionPair
    hops: list[VersionPair] = field(default_factory=list)


def _known(catalog: ReleaseCatalog) -> str:
    minors = catalog.known_minors()
    return f"{minors[0]} to {minors[-1]}" if minors else "nothing"


def version_path(
    member: Member,
    target: Version | None,
    catalog: ReleaseCatalog,
    *,
    allow_multi_minor: bool = False,
) -> VersionPath:
    """The path of ``member`` to Kubernetes ``target`` (None: node images only, no hops).

    Raise VersionPathError when the target is below the member, more than one
    minor above it without ``allow_multi_minor``, or missing from the catalog.
    Hops without a patch resolve to the catalog's latest known patch of their minor.
    """
    current = Version.parse(member.kubernetes_version)
    cilium = Version.parse(member.cilium_version)
    start = VersionPair(kubernetes_version=str(current), cilium_version=str(cilium))
    if target is None:
        return VersionPath(PlannedMemberState.PLANNED, start, start)
    at_target = (
        current.minor_version == target.minor_version if target.patch is None else current == target
    )
    if at_target:
        return VersionPath(PlannedMemberState.SKIPPED, start, start)
    if current.major != target.major:
        raise VersionPathError(
            f"runs Kubernetes {current}; the target {target} is another major version"
        )
    below = current.minor_version > target.minor_version or (
        current.minor_version == target.minor_version and current > target
    )
    if below:
        raise VersionPathError(
            f"runs Kubernetes {current}, above the target {target}: control planes never move down"
        )
    distance = target.minor - current.minor
    if distance >= 2 and not allow_multi_minor:
        raise VersionPathError(
            f"runs Kubernetes {current}: {target} is {distance} minors ahead and control planes "
            "move one minor at a time (allow consecutive hops explicitly with "
            "--allow-multi-minor / allowMultiMinor)"
        )
    hops: list[VersionPair] = []
    missing: list[str] = []
    minors = [Minor(current.major, current.minor + step) for step in range(1, distance + 1)]
    for minor in minors or [target.minor_version]:
        bundled = catalog.cilium_for(minor)
        if bundled is None:
            missing.append(str(minor))
            continue
        # Cilium never moves down either: a member already ahead keeps its version.
        cilium = max(cilium, bundled)
        # A hop without a patch goes to the minor's latest known patch (when the catalog
        # knows one), so every step names a concrete release before anything is touched.
        kubernetes = catalog.resolve(target if minor == target.minor_version else Version(*minor))
        hops.append(VersionPair(kubernetes_version=str(kubernetes), cilium_version=str(cilium)))
    if missing:
        raise VersionPathError(
            f"the release catalog has no Kubernetes {', '.join(missing)} "
            f"(it knows {_known(catalog)})"
        )
    return VersionPath(PlannedMemberState.PLANNED, start, hops[-1], hops)


def _cilium_rank(pair: VersionPair) -> int:
    # Minors of different majors are always "more than one minor apart".
    version = Version.parse(pair.cilium_version)
    return version.major * 10_000 + version.minor


@dataclass(frozen=True)
class SkewProblem:
    """Two members that could be more than one Cilium minor apart while a stage runs."""

    stage: str
    ahead: str
    ahead_cilium: str
    behind: str
    behind_cilium: str

    def __str__(self) -> str:
        return (
            f"while stage {self.stage!r} runs, {self.ahead!r} could already run Cilium "
            f"{self.ahead_cilium} while {self.behind!r} still runs Cilium {self.behind_cilium}: "
            "more than one Cilium minor apart (mesh members must stay within one minor)"
        )


def _extreme_pair(
    spans: dict[str, tuple[VersionPair, VersionPair]],
) -> tuple[str, str] | None:
    """The two different members whose versions could be furthest apart."""
    if len(spans) < 2:
        return None
    highest = sorted(spans, key=lambda n: (-_cilium_rank(spans[n][1]), n))[:2]
    lowest = sorted(spans, key=lambda n: (_cilium_rank(spans[n][0]), n))[:2]
    best: tuple[int, str, str] | None = None
    for ahead in highest:
        for behind in lowest:
            if ahead == behind:
                continue
            gap = _cilium_rank(spans[ahead][1]) - _cilium_rank(spans[behind][0])
            if best is None or gap > best[0]:
                best = (gap, ahead, behind)
    return (best[1], best[2]) if best is not None and best[0] > 1 else None


def _span(member: MemberPlan) -> tuple[VersionPair, VersionPair]:
    versions = [member.from_, *member.hops]
    return (
        min(versions, key=_cilium_rank),
        max(versions, key=_cilium_rank),
    )


def skew_problems(plan: Plan) -> list[SkewProblem]:
    """Walk the stages in order; at each, could two members be > 1 Cilium minor apart?

    While a stage runs, its members (and those of stages that may run at the
    same time: neither before nor after it in the DAG) may be anywhere on
    their path; stages before it are done, stages after it have not started.
    """
    dependencies = {stage.name: stage.depends_on for stage in plan.stages}
    before = {stage.name: ancestors(dependencies, stage.name) for stage in plan.stages}
    problems: list[SkewProblem] = []
    reported: set[tuple[str, str]] = set()
    for stage in plan.stages:
        spans: dict[str, tuple[VersionPair, VersionPair]] = {}
        for other in plan.stages:
            for group in other.groups:
                for member in group.members:
                    if other.name in before[stage.name]:
                        spans[member.name] = (member.to, member.to)
                    elif stage.name in before[other.name]:
                        spans[member.name] = (member.from_, member.from_)
                    else:
                        spans[member.name] = _span(member)
        found = _extreme_pair(spans)
        if found is None or found in reported:
            continue
        reported.add(found)
        ahead, behind = found
        problems.append(
            SkewProblem(
                stage=stage.name,
                ahead=ahead,
                ahead_cilium=spans[ahead][1].cilium_version,
                behind=behind,
                behind_cilium=spans[behind][0].cilium_version,
            )
        )
    return problems
