"""Who may be a member of a network: the rules a cluster must pass to join.

A backend describes clusters (:class:`MemberDescription`); the rules here
judge them, the same for every backend: Kubernetes version, the Cilium
dataplane, a flat network, no self-managed mesh, the cluster name, a unique
cluster id (kept when free, else the lowest free one), pod CIDRs that overlap
no member's, one network per cluster.

Pure data and rules: no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence

from pydantic import Field

from engine.domain.fleet import NetworkMode
from engine.domain.model import DomainModel
from engine.domain.names import MAX_CLUSTER_ID, MIN_CLUSTER_ID, cluster_name_problem
from engine.domain.versions import MIN_MEMBER_KUBERNETES, Version
from engine.domain.windows import MaintenanceWindow

__all__ = [
    "CandidateCheck",
    "CandidateChecks",
    "FailedRule",
    "JoinCheck",
    "MemberDescription",
    "MembershipRule",
    "evaluate_candidates",
    "join_prerequisite_failures",
    "lowest_free_cluster_id",
    "member_list_problems",
]


class MembershipRule(str, enum.Enum):
    """Every rule a cluster can be refused membership for (DESIGN.md, "Network membership").

    The first nine are checked against a cluster's description, by every backend
    alike (:func:`join_prerequisite_failures`); the last four by the network itself.
    """

    KUBERNETES_VERSION = "kubernetesVersion"
    CILIUM_DATAPLANE = "ciliumDataplane"
    FLAT_NETWORK = "flatNetwork"
    NO_SELF_MANAGED_MESH = "noSelfManagedMesh"
    CLUSTER_NAME = "clusterName"
    CLUSTER_ID = "clusterId"
    POD_CIDRS = "podCIDRs"
    SINGLE_NETWORK = "singleNetwork"
    API_AVAILABLE = "apiAvailable"
    #: The cluster is not known to the backend.
    CLUSTER_KNOWN = "clusterKnown"
    #: The network would exceed 255 members.
    MEMBER_LIMIT = "memberLimit"
    #: Already a member (or not one, for a removal) by the time the operation ran.
    MEMBERSHIP = "membership"
    #: A delete without ``force`` found members.
    NETWORK_EMPTY = "networkEmpty"


class MemberDescription(DomainModel):
    """What a cluster is and runs, as read from it (``describe_member``)."""

    name: str
    kubernetes_version: str
    cilium_version: str
    labels: dict[str, str] = Field(default_factory=dict)
    cluster_id: int | None = None
    pod_cidrs: list[str] = Field(default_factory=list, alias="podCIDRs")
    network_mode: NetworkMode = NetworkMode.FLAT
    #: The Cilium dataplane (ACNS on AKS) is installed.
    acns: bool = True
    #: A ClusterMesh not managed by meshfleet is already configured.
    self_managed_mesh: bool = False
    #: The clustermesh-apiserver and agent mesh config are deployed.
    mesh_enabled: bool = False
    #: The network recorded by ``enable_mesh`` (None when not a member).
    network: str | None = None
    #: Peers this member is configured to connect to (keys of ``cilium-clustermesh``).
    mesh_peers: list[str] = Field(default_factory=list)
    nodes: int = 0
    api_available: bool = True
    healthy: bool = True
    #: Why the cluster is not healthy (None when it is).
    reason: str | None = None
    #: Fleet's member ``group`` (the group a strategy's group matches by name).
    update_group: str | None = None
    #: The member's planned-maintenance window (AKS ``aksManagedAutoUpgradeSchedule``).
    maintenance_window: MaintenanceWindow | None = None


class FailedRule(DomainModel):
    """One membership rule the candidate breaks, and why."""

    rule: MembershipRule
    message: str


class JoinCheck(DomainModel):
    """The result of checking a candidate against the rules and the current members."""

    cluster: str
    network: str
    failed: list[FailedRule] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the candidate may join."""
        return not self.failed


def join_prerequisite_failures(
    candidate: MemberDescription, network: str, peers: Sequence[MemberDescription]
) -> list[FailedRule]:
    """Every rule ``candidate`` breaks to join ``network`` whose members are ``peers``.

    Shared by all backends: a backend only has to describe the clusters.
    """
    failed: list[FailedRule] = []

    def fail(rule: MembershipRule, message: str) -> None:
        failed.append(FailedRule(rule=rule, message=message))

    if not candidate.api_available:
        fail(
            MembershipRule.API_AVAILABLE, candidate.reason or "the cluster's API cannot be reached"
        )
    try:
        minor = Version.parse(candidate.kubernetes_version).minor_version
        if tuple(minor) < MIN_MEMBER_KUBERNETES:
            low = ".".join(str(p) for p in MIN_MEMBER_KUBERNETES)
            fail(
                MembershipRule.KUBERNETES_VERSION,
                f"Kubernetes {candidate.kubernetes_version} is older than {low}",
            )
    except ValueError as error:
        fail(MembershipRule.KUBERNETES_VERSION, str(error))
    if not candidate.acns:
        fail(MembershipRule.CILIUM_DATAPLANE, "the Cilium dataplane (ACNS) is not enabled")
    if candidate.network_mode is not NetworkMode.FLAT:
        fail(
            MembershipRule.FLAT_NETWORK,
            f"network mode is {candidate.network_mode.value}; members need a flat network",
        )
    if candidate.self_managed_mesh:
        fail(
            MembershipRule.NO_SELF_MANAGED_MESH, "a self-managed ClusterMesh is already configured"
        )
    problem = cluster_name_problem(candidate.name)
    if problem:
        fail(MembershipRule.CLUSTER_NAME, f"cluster name {candidate.name!r} {problem}")
    others = [p for p in peers if p.name != candidate.name]
    if any(p.name == candidate.name for p in peers):
        fail(
            MembershipRule.SINGLE_NETWORK, f"{candidate.name!r} is already a member of {network!r}"
        )
    if candidate.network is not None and candidate.network != network:
        fail(
            MembershipRule.SINGLE_NETWORK,
            f"{candidate.name!r} already belongs to network {candidate.network!r}",
        )
    if candidate.cluster_id is None:
        fail(MembershipRule.CLUSTER_ID, "the cluster has no cluster id")
    elif not MIN_CLUSTER_ID <= candidate.cluster_id <= MAX_CLUSTER_ID:
        fail(
            MembershipRule.CLUSTER_ID,
            f"cluster id {candidate.cluster_id} is outside {MIN_CLUSTER_ID}..{MAX_CLUSTER_ID}",
        )
    else:
        for peer in others:
            if peer.cluster_id == candidate.cluster_id:
                fail(
                    MembershipRule.CLUSTER_ID,
                    f"cluster id {candidate.cluster_id} is already used by {peer.name!r}",
                )
    own = [ipaddress.ip_network(c) for c in candidate.pod_cidrs]
    if not own:
        fail(MembershipRule.POD_CIDRS, "the cluster reports no pod CIDRs")
    for peer in others:
        for cidr in own:
            for other in peer.pod_cidrs:
                if cidr.overlaps(ipaddress.ip_network(other)):
                    fail(
                        MembershipRule.POD_CIDRS,
                        f"pod CIDR {cidr} overlaps {other} of {peer.name!r}",
                    )
    return failed


def member_list_problems(members: Sequence[str]) -> list[str]:
    """Why a list of cluster names cannot be a request: empty, a bad name, a duplicate."""
    problems: list[str] = []
    if not members:
        problems.append("name at least one cluster")
    seen: set[str] = set()
    for name in members:
        problem = cluster_name_problem(name)
        if problem:
            problems.append(f"cluster name {name!r} {problem}")
        if name in seen:
            problems.append(f"{name!r} appears more than once in the request")
        seen.add(name)
    return problems


def lowest_free_cluster_id(used: Iterable[int]) -> int | None:
    """The lowest cluster id in 1..255 not in ``used`` (None when all are taken)."""
    taken = set(used)
    return next((i for i in range(MIN_CLUSTER_ID, MAX_CLUSTER_ID + 1) if i not in taken), None)


class CandidateCheck(DomainModel):
    """One candidate's verdict: the rules it breaks, and the cluster id it would get."""

    cluster: str
    failed: list[FailedRule] = Field(default_factory=list)
    #: The id to join with (kept when valid and free, else the lowest free one).
    cluster_id: int | None = None
    cluster_id_assigned: bool = False
    #: Set when the backend does not know the cluster.
    unknown: str | None = None

    @property
    def ok(self) -> bool:
        """May join."""
        return not self.failed and self.unknown is None and self.cluster_id is not None


class CandidateChecks(DomainModel):
    """Every candidate's verdict, in request order."""

    checks: list[CandidateCheck]


def evaluate_candidates(
    network: str,
    candidates: Sequence[MemberDescription],
    members: Sequence[tuple[MemberDescription, int]],
) -> list[CandidateCheck]:
    """Check each candidate against the members and the candidates accepted before it.

    ``members`` pairs each member's description with the id the network knows
    it by. A candidate keeps its own cluster id when it is valid and free;
    otherwise it gets the lowest free id (so a missing or clashing id is not a
    reason to reject). Pod CIDRs and every other rule are the backend's shared
    rules (:func:`join_prerequisite_failures`).
    """
    peers = [d.model_copy(update={"cluster_id": cid}) for d, cid in members]
    checks: list[CandidateCheck] = []
    for candidate in candidates:
        used = {p.cluster_id for p in peers if p.cluster_id is not None}
        failed = [
            f
            for f in join_prerequisite_failures(candidate, network, peers)
            if f.rule is not MembershipRule.CLUSTER_ID
        ]
        own = candidate.cluster_id
        cluster_id: int | None
        if own is not None and MIN_CLUSTER_ID <= own <= MAX_CLUSTER_ID and own not in used:
            cluster_id, assigned = own, False
        else:
            cluster_id, assigned = lowest_free_cluster_id(used), True
        if cluster_id is None:
            failed.append(
                FailedRule(rule=MembershipRule.CLUSTER_ID, message="no free cluster id in 1..255")
            )
        check = CandidateCheck(
            cluster=candidate.name,
            failed=failed,
            cluster_id=cluster_id,
            cluster_id_assigned=assigned,
        )
        checks.append(check)
        if check.ok:
            peers.append(candidate.model_copy(update={"cluster_id": cluster_id}))
    return checks
