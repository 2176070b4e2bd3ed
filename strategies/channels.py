"""Auto-upgrade channels: which Kubernetes version a trigger takes a network to.

Pure: the members' versions and the release catalog come in, a decision
comes out. Rules (Fleet's auto-upgrade semantics, DESIGN.md's version rules):

- ``Rapid`` wants the newest minor in the catalog, ``Stable`` the minor one
  below it, ``TargetKubernetesVersion`` the minor it names;
- ``Patch`` wants the newest patch of each member's own minor. The release
  catalog lists minors only (a minor's patches share its Cilium), so the
  newest patch it knows of a minor is that minor itself, and a member on it
  is never behind: ``Patch`` resolves to nothing to do until the catalog
  names patches;
- never down: a member at or above what the channel wants is current;
- never more than one minor: a member behind is taken to its next minor only
  (two minors behind is taken one minor, and the next trigger takes the next);
- one run has one target, so a trigger takes the lowest members first: the
  run's target is the lowest next minor among the members behind, and
  members already on it are skipped by the run. Members more than one minor
  above that target would have to move down, so the trigger fails instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.domain.schedule import Channel, MemberTarget
from engine.domain.strategy import Gate, GateType, UpdateStrategy
from engine.domain.versions import Minor, Version
from strategies.catalog import ReleaseCatalog
from strategies.topology import resolve_dependencies


class ChannelError(ValueError):
    """The channel cannot be resolved for these members; the message says why."""


@dataclass(frozen=True)
class ChannelResolution:
    """What one trigger does: the run's target (None: nothing to do) and each member's part."""

    target: Minor | None
    members: list[MemberTarget] = field(default_factory=list)
    message: str = ""

    @property
    def upgrade_versions(self) -> list[str]:
        """Fleet's ``lastTriggerUpgradeVersions``: the versions this trigger upgrades to."""
        return [str(self.target)] if self.target is not None else []


def channel_minor(
    channel: Channel, catalog: ReleaseCatalog, target_kubernetes_version: str | None = None
) -> Minor | None:
    """The minor a channel wants for every member (None for ``Patch``: each member's own)."""
    known = catalog.known_minors()
    if channel is Channel.RAPID:
        return known[-1]
    if channel is Channel.STABLE:
        if len(known) < 2:
            raise ChannelError(
                f"channel Stable needs two minors in the release catalog (it has {known[0]})"
            )
        return known[-2]
    if channel is Channel.TARGET_KUBERNETES_VERSION:
        if target_kubernetes_version is None:
            raise ChannelError("channel TargetKubernetesVersion needs targetKubernetesVersion")
        wanted = Version.parse(target_kubernetes_version).minor_version
        if wanted not in known:
            raise ChannelError(
                f"the release catalog has no Kubernetes {wanted} "
                f"(it knows {known[0]} to {known[-1]})"
            )
        return wanted
    return None


def resolve_channel(
    channel: Channel,
    members: Sequence[MemberTarget],
    catalog: ReleaseCatalog,
    target_kubernetes_version: str | None = None,
) -> ChannelResolution:
    """Resolve ``channel`` for ``members`` (their ``target`` is ignored and recomputed).

    Raise ChannelError when the channel has no answer in the catalog, or when
    one run cannot take the members to a common target without moving one down.
    """
    wanted = channel_minor(channel, catalog, target_kubernetes_version)
    current = {m.name: Version.parse(m.kubernetes_version).minor_version for m in members}
    steps: dict[str, Minor] = {}
    for name, minor in current.items():
        desired = minor if wanted is None else wanted
        if desired.major != minor.major:
            raise ChannelError(
                f"member {name!r} runs Kubernetes {minor}; the channel wants {desired}, "
                "another major version"
            )
        if desired > minor:
            steps[name] = min(desired, minor.next())
    if not steps:
        why = (
            "the release catalog lists minors only, so every member is on its minor's newest "
            "known patch"
            if channel is Channel.PATCH
            else f"every member runs Kubernetes {wanted} or newer"
        )
        return ChannelResolution(
            target=None,
            members=[m.model_copy(update={"target": None}) for m in members],
            message=f"nothing to do: {why}",
        )
    target = min(steps.values())
    ahead = sorted(name for name, minor in current.items() if minor > target)
    if ahead:
        lowest = sorted(name for name, minor in current.items() if steps.get(name) == target)
        listing = ", ".join(f"{n} ({current[n]})" for n in ahead)
        raise ChannelError(
            f"one run takes every member to one version and members move one minor at a time: "
            f"{', '.join(lowest)} can only go to {target}, but {listing} would have to move "
            "down; bring the members within one minor of each other first"
        )
    if catalog.cilium_for(target) is None:
        raise ChannelError(f"the release catalog has no Kubernetes {target}")
    resolved = [
        m.model_copy(update={"target": str(target) if current[m.name] < target else None})
        for m in members
    ]
    moving = [m.name for m in resolved if m.target is not None]
    later = sorted(name for name in steps if current[name] >= target)
    message = f"{len(moving)} member(s) to Kubernetes {target}: {', '.join(moving)}"
    if later:
        message += f"; {', '.join(later)} follow on a later trigger (one minor at a time)"
    return ChannelResolution(target=target, members=resolved, message=message)


def with_start_gate(strategy: UpdateStrategy, display_name: str) -> UpdateStrategy:
    """``strategy`` with an Approval gate before each stage that depends on nothing.

    A run created but not started by its profile waits there: approving the
    gate (``meshfleet run approve RUN <stage>/before/0``, or by its display
    name when there is one such stage) is its start.
    """
    roots = {
        name for name, needs in resolve_dependencies(strategy.spec.stages).items() if not needs
    }
    gate = Gate(type=GateType.APPROVAL, display_name=display_name)
    stages = [
        stage.model_copy(update={"before_gates": [gate, *stage.before_gates]})
        if stage.name in roots
        else stage
        for stage in strategy.spec.stages
    ]
    return strategy.model_copy(update={"spec": strategy.spec.model_copy(update={"stages": stages})})
