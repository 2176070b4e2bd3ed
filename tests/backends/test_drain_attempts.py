"""Whether a failed drain puts back what it annotated depends on its activity attempt.

A drain that fails part-way undoes its annotations only when nothing will try
again: the error is permanent, the activity is on its last attempt, or it was
cancelled other than by its worker shutting down. These tests run the drain in
an ``ActivityEnvironment`` whose attempt, retry policy and shutdown they set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pytest
from temporalio.common import RetryPolicy
from temporalio.testing import ActivityEnvironment

from activities import drain
from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.backend import ClusterUnavailableError
from engine.domain.services import AnnotationChange
from tests.backends.conftest import MEMBERS, NAMESPACE, SERVICE, SHARED, FakeClock, LoadWorld


class _FailsOnSecondDrain(SimulatedFleetBackend):
    """The simulated fleet, except that draining a second service fails with ``error``."""

    def __init__(self, world_dir: Path, clock: FakeClock, error: Exception) -> None:
        super().__init__(world_dir, clock=clock)
        self.error = error
        self.drained = 0

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        if "/undo/" not in idempotency_key:
            self.drained += 1
            if self.drained > 1:
                raise self.error
        return await super().set_service_annotations(
            cluster, namespace, name, changes, idempotency_key=idempotency_key
        )


def drained_services(backend: SimulatedFleetBackend, cluster: str) -> list[str]:
    """The services ``cluster`` no longer shares."""
    annotations = backend.world().clusters[cluster].service_annotations
    return sorted(key for key, values in annotations.items() if values.get(SHARED) == "false")


def attempt(number: int, of: int) -> ActivityEnvironment:
    """An activity context on attempt ``number`` of a retry policy allowing ``of`` (0: no limit)."""
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info, attempt=number, retry_policy=RetryPolicy(maximum_attempts=of)
    )
    return environment


@pytest.fixture
def two_services(load_world: LoadWorld) -> None:
    """alpha exports shop/checkout and shop/cart."""
    load_world(
        globalServices=[
            {"namespace": NAMESPACE, "name": SERVICE, "clusters": dict.fromkeys(MEMBERS, 3)},
            {"namespace": NAMESPACE, "name": "cart", "clusters": dict.fromkeys(MEMBERS, 2)},
        ]
    )


async def annotate_failing(
    environment: ActivityEnvironment, backend: SimulatedFleetBackend, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await environment.run(drain.annotate, backend, "alpha", "r1/alpha/a1/drain")


@pytest.mark.usefixtures("two_services")
async def test_a_drain_that_loses_the_cluster_on_its_last_attempt_puts_back_what_it_annotated(
    world_dir: Path, clock: FakeClock
) -> None:
    backend = _FailsOnSecondDrain(world_dir, clock, ClusterUnavailableError("alpha"))
    await annotate_failing(attempt(3, of=3), backend, ClusterUnavailableError)
    assert drained_services(backend, "alpha") == []
    assert backend.audit(event=AuditEvent.SERVICE_RESTORED, cluster="alpha")


@pytest.mark.parametrize(("number", "of"), [(1, 3), (7, 0)], ids=["attempts-left", "no-limit"])
@pytest.mark.usefixtures("two_services")
async def test_a_drain_that_loses_the_cluster_with_a_retry_to_come_leaves_it_to_the_retry(
    world_dir: Path, clock: FakeClock, number: int, of: int
) -> None:
    backend = _FailsOnSecondDrain(world_dir, clock, ClusterUnavailableError("alpha"))
    await annotate_failing(attempt(number, of=of), backend, ClusterUnavailableError)
    assert len(drained_services(backend, "alpha")) == 1
    assert not backend.audit(event=AuditEvent.SERVICE_RESTORED, cluster="alpha")


@pytest.mark.usefixtures("two_services")
async def test_a_drain_failing_for_good_puts_back_what_it_annotated_on_any_attempt(
    world_dir: Path, clock: FakeClock
) -> None:
    backend = _FailsOnSecondDrain(world_dir, clock, RuntimeError("the API server said no"))
    await annotate_failing(attempt(1, of=3), backend, RuntimeError)
    assert drained_services(backend, "alpha") == []


async def test_a_drain_cancelled_by_its_worker_shutting_down_leaves_it_to_a_retry_elsewhere(
    backend: SimulatedFleetBackend,
) -> None:
    """The clock stands still, so the peers never stop routing: the drain waits until the
    worker shuts down, and its annotation stays for the retry to carry on with."""
    environment = attempt(1, of=3)
    draining = asyncio.ensure_future(
        environment.run(
            drain.drain_and_wait,
            backend,
            "alpha",
            MEMBERS,
            "r1/alpha/a1/drain",
            timeout=dt.timedelta(hours=1),
            interval=dt.timedelta(milliseconds=10),
        )
    )
    for _ in range(1000):
        if backend.audit(event=AuditEvent.SERVICE_DRAINED, cluster="alpha"):
            break
        await asyncio.sleep(0.01)
    environment.worker_shutdown()
    environment.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    assert drained_services(backend, "alpha") == [f"{NAMESPACE}/{SERVICE}"]
    assert not backend.audit(event=AuditEvent.SERVICE_RESTORED, cluster="alpha")
