"""Drain and restore: one safe pair, in one place, for member updates and network removal.

A drain is two steps, and so is a restore:

- :func:`annotate` sets ``service.cilium.io/shared: "false"`` on every global
  service of a cluster and returns the record (each service's exact previous
  annotations, and its ready endpoints before) without waiting for anything,
  so the caller holds the record before any wait can time out;
- :func:`wait_unrouted` then waits until the peers no longer route to it;
- :func:`restore` puts back exactly what the record says, continues past
  services that vanished meanwhile (reporting them), and raises only when a
  service that still exists could not be put back;
- :func:`wait_routed` then waits until the peers route to it again.

:func:`drain_and_wait` is for a caller that must drain in one activity (the
network's removal): when its wait fails, it restores what it annotated before
it raises, so a failed drain never leaves the cluster drained.

Does I/O through the fleet backend it is given; errors are left for
:func:`activities.common.classified` to classify.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from temporalio import activity

from activities.common import wait_for
from engine.domain.backend import FleetBackend
from engine.domain.errors import MeshfleetError, NotFoundError, Retry, UnavailableError
from engine.domain.services import ANNOTATION_SERVICE_SHARED, AnnotationChange, GlobalService

__all__ = [
    "Drained",
    "LeftDrainedError",
    "RestoreIncompleteError",
    "Restored",
    "annotate",
    "drain_and_wait",
    "peers_routing_to",
    "restore",
    "wait_routed",
    "wait_unrouted",
]

log = structlog.get_logger(__name__)


@dataclass
class Drained:
    """What :func:`annotate` changed: the annotation changes and ready endpoints before."""

    changes: list[AnnotationChange] = field(default_factory=list)
    #: ``namespace/name`` -> ready endpoints of the cluster's copy before the drain.
    ready_before: dict[str, int] = field(default_factory=dict)

    @property
    def services(self) -> list[str]:
        """``namespace/name`` of every service annotated."""
        return [_key(c) for c in self.changes]


@dataclass
class Restored:
    """What :func:`restore` put back, and which drained services no longer exist."""

    restored: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)


class RestoreIncompleteError(MeshfleetError):
    """Some services that still exist could not be put back; they are still drained."""

    retry = Retry.NON_RETRYABLE

    def __init__(self, cluster: str, failed: dict[str, str]) -> None:
        self.cluster = cluster
        self.failed = failed
        reasons = "; ".join(f"{k}: {why}" for k, why in sorted(failed.items()))
        super().__init__(
            f'{cluster} is still drained (shared: "false") for {", ".join(sorted(failed))}: '
            f"{reasons}"
        )


class LeftDrainedError(MeshfleetError):
    """A drain failed and putting back what it annotated failed too (a retry cannot help)."""

    retry = Retry.NON_RETRYABLE


class _StillUnavailable(RestoreIncompleteError, UnavailableError):
    """A restore that a retry may finish (the cluster's API was unreachable)."""

    retry = Retry.RETRYABLE  # before RestoreIncompleteError's in the method resolution order


def _key(change: AnnotationChange) -> str:
    return f"{change.namespace}/{change.name}"


def peers_routing_to(service: GlobalService, cluster: str) -> list[str]:
    """Peers whose service table still holds backends of ``cluster``."""
    viewers = []
    for viewer, view in service.routing.items():
        if viewer == cluster:
            continue
        source = view.from_cluster(cluster)
        if source is not None and source.routable > 0:
            viewers.append(viewer)
    return sorted(viewers)


async def annotate(backend: FleetBackend, cluster: str, key: str) -> Drained:
    """Drain every service global in ``cluster``; wait for nothing.

    Only ``cluster``'s own listing is read: what it exports, and its ready endpoints
    (the record's ``ready_before``), are its own; the peers matter only to the wait.

    Each service's change carries ``key/<namespace>/<name>`` as its idempotency key, so
    a retried call returns the same record. If an attempt fails part-way and a retry
    cannot follow (the error is permanent, this is the activity's last attempt, or it
    was cancelled other than by its worker shutting down), what it annotated is put
    back before the error goes on.
    """
    drained = Drained()
    in_flight: GlobalService | None = None
    try:
        for service in await backend.list_global_services([cluster]):
            state = service.per_cluster.get(cluster)
            if state is None or not state.is_global:
                continue  # not exported by this cluster: nothing to drain
            in_flight = service
            try:
                change = await _drain_one(backend, cluster, service, key)
            except NotFoundError:
                # Deleted since it was listed: nothing to drain, nothing to restore.
                log.warning("drain.service_vanished", cluster=cluster, service=service.key)
                in_flight = None
                continue
            in_flight = None
            drained.changes.append(change)
            drained.ready_before[service.key] = state.ready_endpoints
    except (Exception, asyncio.CancelledError) as error:
        if _last_try(error):
            if in_flight is not None and isinstance(error, asyncio.CancelledError):
                # The change in flight may have landed: the same key tells (or makes it so).
                with contextlib.suppress(Exception):
                    drained.changes.append(await _drain_one(backend, cluster, in_flight, key))
            if drained.changes:
                await _undo(backend, cluster, drained, f"{key}/undo", error)
        raise
    log.info("drain.annotated", cluster=cluster, services=drained.services)
    return drained


async def _drain_one(
    backend: FleetBackend, cluster: str, service: GlobalService, key: str
) -> AnnotationChange:
    return await backend.set_service_annotations(
        cluster,
        service.namespace,
        service.name,
        {ANNOTATION_SERVICE_SHARED: "false"},
        idempotency_key=f"{key}/{service.key}",
    )


def _last_try(error: BaseException) -> bool:
    """Whether nothing will retry after ``error`` (so what was annotated must be undone)."""
    if isinstance(error, asyncio.CancelledError):
        return not activity.is_worker_shutdown()
    if not isinstance(error, UnavailableError):
        return True  # classified as permanent: no retry follows
    info = activity.info()
    limit = info.retry_policy.maximum_attempts if info.retry_policy else 0
    return limit > 0 and info.attempt >= limit


async def _undo(
    backend: FleetBackend, cluster: str, drained: Drained, key: str, cause: BaseException
) -> None:
    """Put back what a failed drain annotated, then let the drain's error go on.

    If the annotations cannot all be put back, the error that goes on says so
    first (``LEFT DRAINED: ...`` naming the cluster and services), so whoever
    reports the drain's failure reports that too.
    """
    try:
        restored = await restore(backend, drained.changes, key)
    except Exception as error:
        log.error(
            "drain.left_drained",
            cluster=cluster,
            services=drained.services,
            error=str(error),
            cause=str(cause),
        )
        raise LeftDrainedError(f"LEFT DRAINED: {error}; the drain had failed: {cause}") from cause
    log.warning(
        "drain.undone",
        cluster=cluster,
        restored=restored.restored,
        vanished=restored.vanished,
        cause=str(cause),
    )


async def wait_unrouted(
    backend: FleetBackend,
    cluster: str,
    members: Sequence[str],
    services: Iterable[str],
    *,
    timeout: dt.timedelta,
    interval: dt.timedelta,
) -> None:
    """Wait until no peer routes to ``cluster``'s backends of ``services`` (``ns/name``)."""
    keys = set(services)
    if not keys:
        return  # it serves nothing: no peer can be routing to it
    waiting: list[str] = []

    async def peers_stopped() -> bool | None:
        current = await backend.list_global_services(members)
        waiting[:] = [
            f"{s.key} (routed by {', '.join(peers_routing_to(s, cluster))})"
            for s in current
            if s.key in keys and peers_routing_to(s, cluster)
        ]
        return True if not waiting else None

    await wait_for(
        peers_stopped,
        timeout=timeout,
        interval=interval,
        describe=lambda: f"peers to stop routing to {cluster}: " + "; ".join(waiting),
    )


async def drain_and_wait(
    backend: FleetBackend,
    cluster: str,
    members: Sequence[str],
    key: str,
    *,
    timeout: dt.timedelta,
    interval: dt.timedelta,
) -> Drained:
    """:func:`annotate`, then :func:`wait_unrouted`; if the wait fails, restore first."""
    drained = await annotate(backend, cluster, key)
    try:
        await wait_unrouted(
            backend, cluster, members, drained.services, timeout=timeout, interval=interval
        )
    except (Exception, asyncio.CancelledError) as error:
        # A cancelled drain (its caller gave up) is undone too; one interrupted by a
        # worker shutting down is not: a retry elsewhere carries on with the same keys.
        if _last_try(error):
            await _undo(backend, cluster, drained, f"{key}/undo", error)
        raise
    return drained


async def restore(backend: FleetBackend, changes: Sequence[AnnotationChange], key: str) -> Restored:
    """Put back exactly the annotations ``changes`` replaced, service by service.

    A service (or cluster) that no longer exists is recorded as vanished and
    skipped; every other service is tried even when one fails. Raises
    :class:`RestoreIncompleteError` naming the services still drained (retryable,
    as an ``UnavailableError``, when only unreachable APIs stood in the way).
    """
    restored = Restored()
    failed: dict[str, str] = {}
    retryable = True
    for change in changes:
        if change.name is None:
            continue
        service = _key(change)
        try:
            await backend.set_service_annotations(
                change.cluster,
                change.namespace,
                change.name,
                change.previous,
                idempotency_key=f"{key}/{service}",
            )
        except NotFoundError:
            restored.vanished.append(service)
            log.warning("drain.service_vanished", cluster=change.cluster, service=service)
            continue
        except UnavailableError as error:
            failed[service] = str(error)
            continue
        except Exception as error:  # permanent: keep going, then report it
            failed[service] = str(error)
            retryable = False
            continue
        restored.restored.append(service)
    cluster = changes[0].cluster if changes else ""
    if failed:
        if retryable:
            raise _StillUnavailable(cluster, failed)
        raise RestoreIncompleteError(cluster, failed)
    log.info(
        "drain.restored", cluster=cluster, restored=restored.restored, vanished=restored.vanished
    )
    return restored


async def wait_routed(
    backend: FleetBackend,
    cluster: str,
    members: Sequence[str],
    ready_before: dict[str, int],
    *,
    timeout: dt.timedelta,
    interval: dt.timedelta,
) -> None:
    """Wait until every peer routes again to ``cluster``'s services that have ready backends.

    Only services that had ready endpoints before the drain and have some again now
    are awaited: a copy that lost its endpoints (the failure that failed the member)
    has nothing for a peer to route to, and waiting on it would hide that failure.
    """
    expected = {k for k, n in ready_before.items() if n > 0}
    peers = [p for p in members if p != cluster]
    if not expected or not peers:
        return
    missing: list[str] = []

    async def routed_again() -> bool | None:
        missing.clear()
        for service in await backend.list_global_services(members):
            state = service.per_cluster.get(cluster)
            if service.key not in expected or state is None or state.ready_endpoints <= 0:
                continue
            routing = set(peers_routing_to(service, cluster))
            lacking = [p for p in peers if p in service.routing and p not in routing]
            if lacking:
                missing.append(f"{service.key} (not yet routed by {', '.join(lacking)})")
        return True if not missing else None

    await wait_for(
        routed_again,
        timeout=timeout,
        interval=interval,
        describe=lambda: f"peers to route to {cluster} again: " + "; ".join(missing),
    )
