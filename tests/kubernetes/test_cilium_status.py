"""Reading Cilium's ``RemoteCluster`` JSON (``cilium-dbg status -o json``) into the domain."""

from __future__ import annotations

import datetime as dt

from activities.backends.kubernetes._objects import parse_agent_status, remote_cluster_status
from tests.kubernetes.agents import sample

HEALTHY_PEER = {
    "name": "us-west-2",
    "ready": True,
    "connected": True,
    "status": "etcd: 1/1 connected",
    "num-endpoints-slices": 0,
    "config": {"cluster-id": 4, "required": True, "retrieved": True},
    "synced": {"nodes": True, "endpoints": True, "identities": True, "services": True},
}


def test_cilium_status_json_parses_with_missing_booleans_as_false() -> None:
    """omitempty: the never-connected peer is all false; unknown keys are ignored."""
    never, half = parse_agent_status(sample("degraded"))
    assert (never.ready, never.connected, never.config, never.num_failures) == (
        False,
        False,
        None,
        4,
    )
    assert never.last_failure == dt.datetime(2026, 11, 26, 3, 58, 40, 120000, tzinfo=dt.UTC)
    assert half.config is not None
    assert half.config.cluster_id == 9
    assert not half.config.retrieved
    assert half.synced is not None
    assert (half.synced.nodes, half.synced.endpoints) == (True, False)


def test_a_peer_with_every_field_reported_is_fully_ready_and_unknown_keys_are_dropped() -> None:
    """``num-endpoints-slices`` is no field of the model: it is dropped, not refused."""
    peer = remote_cluster_status(HEALTHY_PEER)

    assert peer.fully_ready
    assert peer.config is not None
    assert peer.config.cluster_id == 4
