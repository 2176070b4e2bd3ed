"""The network's membership operations: join, remove and delete, member by member."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from engine.domain.durations import format_duration
from engine.domain.failures import failure_text, say_code_once
from engine.domain.membership import CandidateCheck, CandidateChecks, MembershipRule
from engine.domain.names import MAX_NETWORK_MEMBERS
from engine.domain.network import (
    MemberResult,
    MembershipOutcome,
    NetworkMember,
    NetworkStatus,
    OperationResult,
    PendingOperation,
)
from engine.domain.network_activities import (
    ACTIVITY_CHECK_CANDIDATES,
    ACTIVITY_CONNECT_PEERS,
    ACTIVITY_DISABLE_MESH,
    ACTIVITY_DISCONNECT_PEERS,
    ACTIVITY_DRAIN_SERVICES,
    ACTIVITY_ENABLE_MESH,
    ACTIVITY_RESTORE_SERVICES,
    ACTIVITY_WAIT_UNLISTED,
    CheckCandidatesInput,
    DisableMeshInput,
    DrainedServices,
    DrainServicesInput,
    EnableMeshInput,
    EnableMeshResult,
    MemberId,
    PeersInput,
    RestoreServicesInput,
    WaitUnlistedInput,
)
from workflows.network_health import NetworkHealth
from workflows.network_patches import PATCH_ENABLE_MESH_CLUSTER_ID


class NetworkMembership(NetworkHealth):
    """Runs one join, remove or delete against the members' clusters."""

    async def _join(self, op: PendingOperation) -> OperationResult:
        before = (self.state.status, self.state.status_message)
        self._set_status(NetworkStatus.APPLYING)
        results: dict[str, MemberResult] = {}
        candidates: list[str] = []
        for name in op.members:
            if self.state.member(name) is not None:
                results[name] = _rejected(name, MembershipRule.MEMBERSHIP, "already a member")
            elif len(self.state.members) + len(candidates) >= MAX_NETWORK_MEMBERS:
                results[name] = _rejected(
                    name,
                    MembershipRule.MEMBER_LIMIT,
                    f"the network already has {MAX_NETWORK_MEMBERS} members",
                )
            else:
                candidates.append(name)
        accepted: list[CandidateCheck] = []
        if candidates:
            checks = await self._call(
                ACTIVITY_CHECK_CANDIDATES,
                CheckCandidatesInput(
                    network=self.state.name,
                    candidates=candidates,
                    members=[
                        MemberId(name=m.name, cluster_id=m.cluster_id) for m in self.state.members
                    ],
                ),
                CandidateChecks,
                summary=f"check {len(candidates)} candidate(s)",
            )
            for check in checks.checks:
                if check.unknown is not None:
                    results[check.cluster] = _rejected(
                        check.cluster, MembershipRule.CLUSTER_KNOWN, check.unknown
                    )
                elif not check.ok:
                    results[check.cluster] = _rejected(
                        check.cluster,
                        check.failed[0].rule,
                        "; ".join(f"{f.rule.value}: {f.message}" for f in check.failed),
                    )
                else:
                    accepted.append(check)
        for name, result in results.items():
            self._log(
                "rejected",
                say_code_once(f"{result.rule.value if result.rule else ''}: {result.message}"),
                op,
                name,
            )

        newcomers = await self._enable_all(op, accepted, results)
        if not newcomers:
            if self.state.members:
                self._set_status(*before)  # nothing changed
            else:
                self._set_status(NetworkStatus.NOT_CONNECTED)
            return self._result(op, results)

        failure = await self._connect_newcomers(op, [m.name for m in newcomers])
        if failure is not None:
            for member in newcomers:
                results[member.name] = MemberResult(
                    cluster=member.name,
                    outcome=MembershipOutcome.FAILED,
                    cluster_id=member.cluster_id,
                    message=f"the mesh is enabled but connecting it failed: {failure}; "
                    "it is recorded as a member (remove it to clean up)",
                )
            self._set_status(NetworkStatus.FAILED, failure)
            return self._result(op, results)

        readiness = await self._settle(op)
        for member in newcomers:
            note = (
                "joined; the whole mesh reports ready"
                if readiness.ready
                else f"joined, but the mesh did not report ready within "
                f"{format_duration(self.settings.mesh_ready_timeout)}: "
                f"{len(readiness.not_ready_links)} link(s) not ready"
            )
            results[member.name] = MemberResult(
                cluster=member.name,
                outcome=MembershipOutcome.JOINED,
                cluster_id=member.cluster_id,
                message=note
                + (" (cluster id assigned by the network)" if member.cluster_id_assigned else ""),
            )
        return self._result(op, results, readiness)

    async def _enable_all(
        self,
        op: PendingOperation,
        accepted: Sequence[CandidateCheck],
        results: dict[str, MemberResult],
    ) -> list[NetworkMember]:
        """Enable the mesh on every accepted newcomer (in parallel); record those that came up."""
        # Histories recorded before the allocation was passed scheduled it without the id.
        pass_id = workflow.patched(PATCH_ENABLE_MESH_CLUSTER_ID)
        outcomes = await asyncio.gather(
            *[
                self._call(
                    ACTIVITY_ENABLE_MESH,
                    EnableMeshInput(
                        cluster=check.cluster,
                        network=self.state.name,
                        idempotency_key=self._key(op, check.cluster, "enable-mesh"),
                        timeout=self.settings.mesh_ready_timeout,
                        cluster_id=check.cluster_id if pass_id else None,
                    ),
                    EnableMeshResult,
                    waits=self.settings.mesh_ready_timeout,
                    summary=f"enable the mesh on {check.cluster}",
                )
                for check in accepted
            ],
            return_exceptions=True,
        )
        newcomers: list[NetworkMember] = []
        for check, outcome in zip(accepted, outcomes, strict=True):
            name = check.cluster
            if isinstance(outcome, BaseException):
                results[name] = MemberResult(
                    cluster=name, outcome=MembershipOutcome.FAILED, message=failure_text(outcome)
                )
            elif not outcome.succeeded:
                results[name] = MemberResult(
                    cluster=name,
                    outcome=MembershipOutcome.REJECTED
                    if outcome.rule
                    else MembershipOutcome.FAILED,
                    rule=outcome.rule,
                    message=outcome.message,
                )
            else:
                assert check.cluster_id is not None  # ok() guarantees it
                member = NetworkMember(
                    name=name,
                    cluster_id=check.cluster_id,
                    cluster_id_assigned=check.cluster_id_assigned,
                    joined_at=workflow.now(),
                    operation=op.id,
                )
                self.state.members.append(member)
                newcomers.append(member)
                self._log("meshEnabled", f"cluster id {member.cluster_id}", op, name)
                continue
            self._log("failed", results[name].message or "", op, name)
        self._publish()
        return newcomers

    async def _connect_newcomers(self, op: PendingOperation, newcomers: list[str]) -> str | None:
        """Connect each newcomer to every member and every member to the newcomers."""
        everyone = self.state.member_names()
        pairs = [(n, [p for p in everyone if p != n]) for n in newcomers]
        pairs += [(m, newcomers) for m in everyone if m not in newcomers]
        failure = await self._all(
            [
                self._call(
                    ACTIVITY_CONNECT_PEERS,
                    PeersInput(
                        cluster=cluster,
                        peers=peers,
                        idempotency_key=self._key(op, cluster, "connect"),
                    ),
                    None,
                    summary=f"connect {cluster} to {len(peers)} peer(s)",
                )
                for cluster, peers in pairs
                if peers
            ]
        )
        if failure is None:
            self._log(
                "connected", f"{', '.join(newcomers)} connected with {len(everyone)} member(s)", op
            )
        return failure

    async def _remove(self, op: PendingOperation) -> OperationResult:
        results = await self._remove_members(op, op.members)
        readiness = (
            await self._settle(op) if self.state.status is not NetworkStatus.FAILED else None
        )
        return self._result(op, results, readiness)

    async def _remove_members(
        self, op: PendingOperation, names: Sequence[str]
    ) -> dict[str, MemberResult]:
        self._set_status(NetworkStatus.APPLYING)
        results: dict[str, MemberResult] = {}
        failed: str | None = None
        for name in names:
            if failed is not None:
                results[name] = MemberResult(
                    cluster=name,
                    outcome=MembershipOutcome.FAILED,
                    message=f"not attempted: removing {failed!r} failed first",
                )
            elif self.state.member(name) is None:
                results[name] = _rejected(name, MembershipRule.MEMBERSHIP, "not a member")
            else:
                results[name] = await self._remove_member(op, name)
                if results[name].outcome is MembershipOutcome.FAILED:
                    failed = name
        return results

    async def _remove_member(self, op: PendingOperation, name: str) -> MemberResult:
        """Drain, disconnect both ways, wait until forgotten, disable; then restore annotations."""
        peers = [m for m in self.state.member_names() if m != name]
        timeout = self.settings.mesh_ready_timeout
        try:
            drained = await self._call(
                ACTIVITY_DRAIN_SERVICES,
                DrainServicesInput(
                    cluster=name,
                    peers=peers,
                    idempotency_key=self._key(op, name, "drain"),
                    timeout=timeout,
                ),
                DrainedServices,
                waits=timeout,
                summary=f"drain the global services of {name}",
            )
            self._log("drained", f"{len(drained.changes)} global service(s) drained", op, name)
            failure = await self._all(
                [
                    self._call(
                        ACTIVITY_DISCONNECT_PEERS,
                        PeersInput(
                            cluster=cluster,
                            peers=targets,
                            idempotency_key=self._key(op, f"{name}/{cluster}", "disconnect"),
                        ),
                        None,
                        summary=f"disconnect {cluster} from {', '.join(targets)}",
                    )
                    for cluster, targets in [(name, peers), *[(p, [name]) for p in peers]]
                    if targets
                ]
            )
            if failure is not None:
                raise ApplicationError(failure)
            await self._call(
                ACTIVITY_WAIT_UNLISTED,
                WaitUnlistedInput(cluster=name, peers=peers, timeout=timeout),
                None,
                waits=timeout,
                summary=f"wait until no peer lists {name}",
            )
            await self._call(
                ACTIVITY_DISABLE_MESH,
                DisableMeshInput(cluster=name, idempotency_key=self._key(op, name, "disable-mesh")),
                None,
                summary=f"disable the mesh on {name}",
            )
        except (ActivityError, ApplicationError) as error:
            message = failure_text(error)
            self._set_status(NetworkStatus.FAILED, f"removing {name!r} failed: {message}")
            self._log("failed", message, op, name)
            return MemberResult(cluster=name, outcome=MembershipOutcome.FAILED, message=message)
        member = self.state.member(name)
        self.state.members = [m for m in self.state.members if m.name != name]
        self._log("removed", "disconnected from every peer; mesh disabled", op, name)
        self._publish()
        note = "removed"
        if drained.changes:
            try:
                await self._call(
                    ACTIVITY_RESTORE_SERVICES,
                    RestoreServicesInput(
                        changes=drained.changes, idempotency_key=self._key(op, name, "restore")
                    ),
                    None,
                    summary=f"restore the service annotations of {name}",
                )
                note = "removed; its service annotations are restored"
            except ActivityError as error:
                note = (
                    f"removed, but restoring its service annotations failed: {failure_text(error)}"
                )
                self._log("warning", note, op, name)
        return MemberResult(
            cluster=name,
            outcome=MembershipOutcome.REMOVED,
            cluster_id=member.cluster_id if member else None,
            message=note,
        )

    async def _delete(self, op: PendingOperation) -> OperationResult:
        if self.state.members and not op.force:
            self.state.deleting = False
            message = (
                f"network {self.state.name!r} has {len(self.state.members)} member(s); "
                "remove them first or delete with force"
            )
            return self._result(op, {}, message=message, rule_failed=True)
        results = await self._remove_members(op, self.state.member_names())
        if self.state.members:
            self.state.deleting = False
            return self._result(
                op, results, message="delete stopped: a member could not be removed"
            )
        self.state.deleted = True
        self._set_status(NetworkStatus.NOT_CONNECTED)
        self._log("deleted", "every member removed; the network is deleted", op)
        return self._result(op, results, deleted=True)


def _rejected(cluster: str, rule: MembershipRule, message: str) -> MemberResult:
    return MemberResult(
        cluster=cluster, outcome=MembershipOutcome.REJECTED, rule=rule, message=message
    )
