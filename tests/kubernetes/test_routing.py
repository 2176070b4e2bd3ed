"""Routing comes from the peers' agents, not from the annotations meshfleet wrote.

The fake agents answer ``cilium-dbg service list -o json`` from the emulated
clusters' declared state (what Cilium would program), and a peer's tables can be
frozen for N polls: a peer that keeps routing to a drained member.
"""

from __future__ import annotations

import datetime as dt
import json

import yaml
from temporalio.testing import ActivityEnvironment

from activities.backends.kubernetes._objects import owner_of, parse_service_table
from activities.network import NetworkActivities
from engine.domain.network_activities import DrainServicesInput
from engine.domain.services import ANNOTATION_SERVICE_SHARED, GlobalService
from tests.kubernetes.agents import SAMPLES, service_table
from tests.kubernetes.emulated_fleet import Fleet

MEMBERS = ["ap-south-1", "us-east-1", "eu-north-1"]
DRAINED, PEER = "ap-south-1", "us-east-1"


def routable(
    services: list[GlobalService], viewer: str, source: str, key: str = "shop/cart"
) -> int:
    service = next(s for s in services if s.key == key)
    found = service.routing[viewer].from_cluster(source)
    return found.routable if found else 0


async def test_each_viewer_routes_to_the_active_backends_its_agents_hold_by_pod_cidr(
    fleet: Fleet,
) -> None:
    backend = fleet.backend()

    services = await backend.list_global_services(MEMBERS)

    # cart: 2 ready pods in each member; every member routes to every member's.
    for viewer in MEMBERS:
        for source in MEMBERS:
            assert routable(services, viewer, source) == 2
    assert {c.pod for c in fleet.agents.calls if c.command[1] == "service"} == {
        f"cilium-{m}-{i}" for m in MEMBERS for i in range(2)
    }  # one exec per agent pod


async def test_a_drain_is_not_seen_until_the_peers_agents_drop_the_backends(fleet: Fleet) -> None:
    backend = fleet.backend()
    fleet.agents.freeze(PEER, polls=1)

    await backend.set_service_annotations(
        DRAINED, "shop", "cart", {ANNOTATION_SERVICE_SHARED: "false"}, idempotency_key="d"
    )
    first = await backend.list_global_services(MEMBERS)
    second = await backend.list_global_services(MEMBERS)

    assert routable(first, PEER, DRAINED) == 2  # annotated, but still in the peer's datapath
    assert routable(first, "eu-north-1", DRAINED) == 0
    assert routable(second, PEER, DRAINED) == 0


async def test_a_peer_that_keeps_routing_for_n_polls_delays_the_drain_until_it_stops(
    fleet: Fleet,
) -> None:
    polls = 4
    fleet.agents.freeze(PEER, polls=polls)
    activities = NetworkActivities(fleet.backend(), poll_interval=dt.timedelta(milliseconds=20))

    drained = await ActivityEnvironment().run(
        activities.drain_services,
        DrainServicesInput(
            cluster=DRAINED,
            peers=[PEER, "eu-north-1"],
            idempotency_key="drain",
            timeout=dt.timedelta(seconds=30),
        ),
    )

    assert {f"{c.namespace}/{c.name}" for c in drained.changes} == {"shop/cart", "shop/checkout"}
    # Every frozen answer was used up before the drain returned: it waited for the peer.
    assert all(left == 0 for _, left in fleet.agents.frozen.values())
    asked = [c for c in fleet.agents.calls if c.cluster == PEER and c.command[1] == "service"]
    assert len(asked) >= 2 * (polls + 1)  # two agent pods, asked on every poll


async def test_backends_of_an_unreachable_member_stay_visible_as_stale(fleet: Fleet) -> None:
    backend = fleet.backend()
    await backend.list_global_services(MEMBERS)  # its pod CIDRs are known from then on
    config = yaml.safe_load(fleet.kubeconfig.read_text())
    for cluster in config["clusters"]:
        if cluster["name"] == DRAINED:
            cluster["cluster"]["server"] = "http://127.0.0.1:9"  # its API goes away
    fleet.kubeconfig.write_text(yaml.safe_dump(config))
    backend.clients.forget(DRAINED)

    services = await backend.list_global_services(MEMBERS)

    cart = next(s for s in services if s.key == "shop/cart")
    seen = cart.routing[PEER].from_cluster(DRAINED)
    assert seen is not None
    assert seen.stale
    assert seen.routable == 2  # the agents keep the last-known backends
    assert seen.ready == 0


def test_only_active_backends_count_as_routed() -> None:
    output = json.dumps(
        [
            {
                "spec": {
                    "frontend-address": {"ip": "10.96.0.10", "port": 80},
                    "backend-addresses": [
                        {"ip": "10.3.0.10", "port": 8080, "state": "active"},
                        {"ip": "10.3.0.11", "port": 8080, "state": "terminating"},
                        {"ip": "10.3.0.12", "port": 8080, "state": "quarantined"},
                        {"ip": "10.3.0.13", "port": 8080, "state": "maintenance"},
                        {"ip": "10.3.0.14", "port": 8080},
                    ],
                    "flags": {"type": "ClusterIP", "name": "cart", "namespace": "shop"},
                }
            },
            {"spec": {"backend-addresses": [{"ip": "10.3.0.99"}], "flags": {"type": "HostPort"}}},
        ]
    )

    assert parse_service_table(output) == {("shop", "cart"): {"10.3.0.10", "10.3.0.14"}}


def test_the_real_service_list_shape_yields_the_active_backends_per_service() -> None:
    """The sample is Cilium's ``Service`` model as the agent prints it (see samples/README)."""
    output = (SAMPLES / "cilium-dbg-service-list.json").read_text()

    assert parse_service_table(output) == {
        ("default", "kubernetes"): {"172.18.0.4"},
        # ClusterIP and NodePort frontends merged; terminating and quarantined left out.
        ("shop", "cart"): {"10.1.0.21", "10.2.0.33", "10.3.0.45"},
    }


def test_a_backend_address_with_a_cluster_id_is_still_attributed_by_pod_cidr() -> None:
    """``10.3.0.45@3`` is an AddrCluster string: the IP before ``@`` is the pod's address."""
    output = json.dumps(
        [
            {
                "spec": {
                    "backend-addresses": [{"ip": "10.3.0.45@3", "port": 8080, "state": "active"}],
                    "flags": {"type": "ClusterIP", "name": "cart", "namespace": "shop"},
                    "frontend-address": {"ip": "10.96.40.17", "port": 80},
                }
            }
        ]
    )

    (ip,) = parse_service_table(output)[("shop", "cart")]
    assert owner_of(ip, {"alpha-1": ["10.1.0.0/16"], "charlie-3": ["10.3.0.0/16"]}) == "charlie-3"


def test_the_realized_table_is_what_counts_when_it_differs_from_the_spec() -> None:
    """cilium-dbg prints ``status.realized`` (what the datapath holds); we read the same."""
    spec = {
        "backend-addresses": [{"ip": "10.3.0.10", "state": "active"}],
        "flags": {"type": "ClusterIP", "name": "cart", "namespace": "shop"},
        "frontend-address": {"ip": "10.96.40.17", "port": 80},
    }
    realized = {**spec, "backend-addresses": [{"ip": "10.3.0.11", "state": "active"}]}
    output = json.dumps([{"spec": spec, "status": {"realized": realized}}])

    assert parse_service_table(output) == {("shop", "cart"): {"10.3.0.11"}}


def _shape(value: object) -> object:
    """Keys (recursively, lists by their first item) without values: the JSON's shape."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


async def test_the_fake_agents_answer_in_the_shape_of_the_real_sample(fleet: Fleet) -> None:
    """The emulated tables are only evidence if they look like what an agent prints."""
    sample = json.loads((SAMPLES / "cilium-dbg-service-list.json").read_text())
    cart = next(e for e in sample if e["spec"]["flags"]["name"] == "cart")
    sample_backend = dict(cart["spec"]["backend-addresses"][0])
    del sample_backend["nodeName"]  # omitempty: the fake agents name no node

    table = json.loads(service_table(PEER, fleet.agents.emulators))
    served = next(e for e in table if e["spec"]["flags"]["name"] == "cart")

    assert served["status"]["realized"] == served["spec"]
    assert _shape(served["spec"]["backend-addresses"][0]) == _shape(sample_backend)
    without_backends = {k: v for k, v in served["spec"].items() if k != "backend-addresses"}
    sample_spec = {k: v for k, v in cart["spec"].items() if k != "backend-addresses"}
    assert _shape(without_backends) == _shape(sample_spec)
    assert list(served["spec"]) == list(cart["spec"])  # the Go struct's key order
