"""Global services from annotations and EndpointSlices; drains that a crash cannot spoil."""

from __future__ import annotations

import pytest

from activities import drain
from activities.backends.kubernetes import ANNOTATION_DRAINED
from engine.domain.backend import OperationConflictError
from engine.domain.errors import NotFoundError
from engine.domain.services import ANNOTATION_SERVICE_SHARED
from tests.kubernetes.emulated_fleet import Fleet
from tests.kubernetes.seeds import MEMBERS, OFFLINE

DRAIN = {ANNOTATION_SERVICE_SHARED: "false"}


def service_annotations(fleet: Fleet, cluster: str, namespace: str, name: str) -> dict[str, str]:
    obj = fleet.members[cluster].obj("v1/services", namespace, name)
    return dict(obj["metadata"].get("annotations") or {})


async def test_a_service_is_global_only_with_both_annotations(fleet: Fleet) -> None:
    """shop is a global namespace; internal is not, so its annotated service is not global."""
    services = await fleet.backend().list_global_services(list(MEMBERS))

    assert [s.key for s in services] == ["shop/cart", "shop/checkout"]


async def test_ready_endpoints_count_each_pod_once_and_unset_ready_as_ready(fleet: Fleet) -> None:
    """Dual-stack slices list every pod twice; ``conditions.ready`` unset means ready."""
    services = await fleet.backend().list_global_services(list(MEMBERS))

    cart = services[0]
    assert cart.min_ready_endpoints == 2
    state = cart.per_cluster["us-east-1"]
    assert (state.endpoints, state.ready_endpoints) == (3, 2)
    view = cart.routing["ap-south-1"]
    assert sorted(b.cluster for b in view.backends) == sorted(MEMBERS)
    assert view.ready_routable == 6


async def test_a_drain_reads_and_annotates_its_own_cluster_and_asks_no_peer(
    fleet: Fleet,
) -> None:
    """What a member exports, and its ready endpoints, are its own cluster's to say: a
    listing over the peers would ask each peer's API server and exec in its agents."""
    peers = [m for m in MEMBERS if m != "us-east-1"]
    requests_before = {m: len(list(fleet.members[m])) for m in peers}

    drained = await drain.annotate(fleet.backend(), "us-east-1", "run1/us-east-1/a1/drain")

    assert drained.services == ["shop/cart", "shop/checkout"]
    assert drained.ready_before == {"shop/cart": 2, "shop/checkout": 1}
    assert {m: len(list(fleet.members[m])) for m in peers} == requests_before
    assert {call.cluster for call in fleet.agents.calls} == {"us-east-1"}


async def test_an_unreachable_member_is_left_out_of_global_services(fleet: Fleet) -> None:
    services = await fleet.backend().list_global_services([*MEMBERS, OFFLINE])

    assert OFFLINE not in services[0].per_cluster


async def test_drain_then_restore_puts_back_exactly_what_was_there(fleet: Fleet) -> None:
    backend = fleet.backend()
    before = service_annotations(fleet, "us-east-1", "shop", "cart")

    drained = await backend.set_service_annotations(
        "us-east-1", "shop", "cart", DRAIN, idempotency_key="run1/us-east-1/drain/cart"
    )

    assert drained.previous == {ANNOTATION_SERVICE_SHARED: None}
    during = service_annotations(fleet, "us-east-1", "shop", "cart")
    assert during[ANNOTATION_SERVICE_SHARED] == "false"
    assert ANNOTATION_DRAINED in during
    services = await backend.list_global_services(list(MEMBERS))
    assert services[0].routing["ap-south-1"].from_cluster("us-east-1") is None
    assert services[0].routing["us-east-1"].from_cluster("us-east-1") is not None

    await backend.set_service_annotations(
        "us-east-1", "shop", "cart", drained.previous, idempotency_key="run1/us-east-1/restore/cart"
    )

    assert service_annotations(fleet, "us-east-1", "shop", "cart") == before


async def test_draining_a_service_that_was_shared_explicitly_restores_that_value(
    fleet: Fleet,
) -> None:
    backend = fleet.backend()
    before = service_annotations(fleet, "ap-south-1", "shop", "checkout")

    drained = await backend.set_service_annotations(
        "ap-south-1", "shop", "checkout", DRAIN, idempotency_key="d1"
    )
    await backend.set_service_annotations(
        "ap-south-1", "shop", "checkout", drained.previous, idempotency_key="r1"
    )

    assert drained.previous == {ANNOTATION_SERVICE_SHARED: "true"}
    assert service_annotations(fleet, "ap-south-1", "shop", "checkout") == before


async def test_a_retried_drain_after_a_worker_crash_returns_the_pre_drain_annotations(
    fleet: Fleet,
) -> None:
    """The first worker drained and died before answering; a new one retries the same key."""
    before = service_annotations(fleet, "us-east-1", "shop", "checkout")
    await fleet.backend().set_service_annotations(
        "us-east-1", "shop", "checkout", DRAIN, idempotency_key="run1/drain"
    )

    restarted = fleet.backend()
    retried = await restarted.set_service_annotations(
        "us-east-1", "shop", "checkout", DRAIN, idempotency_key="run1/drain"
    )
    await restarted.set_service_annotations(
        "us-east-1", "shop", "checkout", retried.previous, idempotency_key="run1/restore"
    )

    assert retried.previous == {ANNOTATION_SERVICE_SHARED: "true"}
    assert service_annotations(fleet, "us-east-1", "shop", "checkout") == before


async def test_a_restore_after_a_crash_applies_the_record_not_a_misremembered_value(
    fleet: Fleet,
) -> None:
    """The record written with the drain wins over what a caller thinks was there."""
    before = service_annotations(fleet, "us-east-1", "shop", "cart")
    await fleet.backend().set_service_annotations(
        "us-east-1", "shop", "cart", DRAIN, idempotency_key="run1/drain"
    )

    await fleet.backend().set_service_annotations(
        "us-east-1",
        "shop",
        "cart",
        {ANNOTATION_SERVICE_SHARED: "true"},
        idempotency_key="run1/restore",
    )

    assert service_annotations(fleet, "us-east-1", "shop", "cart") == before


async def test_a_second_drain_by_another_run_still_restores_to_the_origin(fleet: Fleet) -> None:
    backend = fleet.backend()
    before = service_annotations(fleet, "us-east-1", "shop", "cart")
    await backend.set_service_annotations("us-east-1", "shop", "cart", DRAIN, idempotency_key="a")

    second = await backend.set_service_annotations(
        "us-east-1", "shop", "cart", DRAIN, idempotency_key="b"
    )
    await backend.set_service_annotations(
        "us-east-1", "shop", "cart", second.previous, idempotency_key="c"
    )

    assert second.previous == {ANNOTATION_SERVICE_SHARED: None}
    assert service_annotations(fleet, "us-east-1", "shop", "cart") == before


async def test_reusing_a_key_for_another_change_is_a_conflict(fleet: Fleet) -> None:
    backend = fleet.backend()
    await backend.set_service_annotations("us-east-1", "shop", "cart", DRAIN, idempotency_key="k")

    with pytest.raises(OperationConflictError):
        await backend.set_service_annotations(
            "us-east-1", "shop", "checkout", DRAIN, idempotency_key="k"
        )


async def test_annotating_a_missing_service_is_not_found(fleet: Fleet) -> None:
    with pytest.raises(NotFoundError, match="shop/nope"):
        await fleet.backend().set_service_annotations(
            "us-east-1", "shop", "nope", DRAIN, idempotency_key="k"
        )


async def test_namespace_annotations_are_set_and_removed_with_their_previous_values(
    fleet: Fleet,
) -> None:
    backend = fleet.backend()
    change = await backend.set_namespace_annotations(
        "us-east-1", "internal", {"clustermesh.cilium.io/global": "true"}, idempotency_key="n1"
    )

    assert change.previous == {"clustermesh.cilium.io/global": None}
    assert [s.key for s in await backend.list_global_services(["us-east-1"])] == [
        "internal/ledger",
        "shop/cart",
        "shop/checkout",
    ]
    await backend.set_namespace_annotations(
        "us-east-1", "internal", change.previous, idempotency_key="n2"
    )
    namespace = fleet.members["us-east-1"].obj("v1/namespaces", None, "internal")
    assert namespace["metadata"]["annotations"] == {}
