"""Acceptance: the network workflow builds, grows and shrinks a mesh of CAAPH-managed clusters.

The real network workflow runs on a real worker (the session's Temporal dev
server) with its activities bound to the Kubernetes backend on four emulated
members whose Cilium a HelmChartProxy installs. ``network create`` with three,
``network join`` of a fourth, ``network remove`` of one: each member's mesh
values list exactly its peers, the removed one gets its own values back, the
agents report the mesh ready, and no TLS key, token or kubeconfig appears in the
histories or the logs.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import uuid

import pytest
from structlog.testing import capture_logs
from temporalio.client import Client

from activities.network import NetworkActivities
from engine.domain.network import MembershipOutcome, NetworkSettings, network_workflow_id
from engine.runtime.client import MeshfleetClient
from engine.runtime.worker import build_worker
from tests.kubernetes.caaph import (
    CAAPH_MEMBERS,
    SECRETS,
    USER_VALUES,
    CaaphFleet,
    caaph_fleet,
)
from tests.kubernetes.emulated_fleet import walk_strings
from tests.kubernetes.test_member_workflow import decoded
from workflows.network import NetworkWorkflow

__all__ = ["caaph_fleet"]

ALPHA, BRAVO, CHARLIE, DELTA = CAAPH_MEMBERS
SETTINGS = NetworkSettings(
    mesh_ready_timeout=dt.timedelta(seconds=30), heartbeat_timeout=dt.timedelta(seconds=5)
)


def secret_strings(fleet: CaaphFleet) -> set[str]:
    """Every Secret value on every cluster (raw and decoded), tokens and the TLS key."""
    found = {*fleet.secrets, "BEGIN EC PRIVATE KEY"}
    for emu in [*fleet.members.values(), fleet.management]:
        for (resource, _, _), obj in list(emu.objects.items()):
            if resource == SECRETS and not obj.deleted:
                for value in (obj.raw.get("data") or {}).values():
                    found |= {value, base64.b64decode(value).decode()}
    return found


def peers_of(fleet: CaaphFleet, member: str) -> list[str]:
    return list(fleet.mesh_values(member)["peers"])


async def test_create_join_and_remove_configure_every_member_and_leak_no_secret(
    caaph_fleet: CaaphFleet, client: Client, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"mesh-{uuid.uuid4().hex[:8]}"
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    activities = NetworkActivities(
        caaph_fleet.backend(), poll_interval=dt.timedelta(milliseconds=50)
    ).all()
    caplog.set_level(logging.DEBUG)
    secrets: set[str] = set()

    with capture_logs() as logs:
        async with build_worker(
            client, task_queue, workflows=[NetworkWorkflow], activities=activities
        ):
            created = await meshfleet.create_network(
                name, [ALPHA, BRAVO, CHARLIE], settings=SETTINGS
            )
            assert created is not None
            assert [m.outcome for m in created.members] == [MembershipOutcome.JOINED] * 3, created
            assert created.mesh_ready, created.not_ready_links  # every agent, every peer
            for member in (ALPHA, BRAVO, CHARLIE):
                assert peers_of(caaph_fleet, member) == sorted({ALPHA, BRAVO, CHARLIE} - {member})
            assert peers_of(caaph_fleet, DELTA) == []

            joined = await meshfleet.join(name, [DELTA])
            assert [m.outcome for m in joined.members] == [MembershipOutcome.JOINED], joined
            assert joined.mesh_ready, joined.not_ready_links
            for member in CAAPH_MEMBERS:
                assert peers_of(caaph_fleet, member) == sorted(set(CAAPH_MEMBERS) - {member})
            secrets |= secret_strings(caaph_fleet)  # while all four hold connection Secrets

            removed = await meshfleet.remove(name, [BRAVO])
            assert [m.outcome for m in removed.members] == [MembershipOutcome.REMOVED], removed
            assert removed.mesh_ready, removed.not_ready_links
            rest = {ALPHA, CHARLIE, DELTA}
            for member in rest:
                assert peers_of(caaph_fleet, member) == sorted(rest - {member})
            assert caaph_fleet.values(BRAVO) == USER_VALUES  # its own values, byte for byte
            assert (await caaph_fleet.backend().describe_member(BRAVO)).network is None
        handle = client.get_workflow_handle(network_workflow_id(name))
        history = await handle.fetch_history()
        await handle.terminate("test finished")

    secrets |= secret_strings(caaph_fleet)
    texts = [*decoded(json.loads(history.to_json())), *walk_strings([dict(e) for e in logs])]
    assert any(DELTA in t for t in texts)  # the scan reads the decoded payloads
    leaks = sorted({s[:16] for s in secrets for t in [*texts, caplog.text] if s and s in t})
    assert leaks == [], f"secrets leaked: {leaks}"
