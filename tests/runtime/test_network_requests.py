"""Operator actions on a network are refused before they reach Temporal, naming each rule.

``release_network`` and ``clear_drained`` record who acted and why, so both
must be given; every broken rule is listed at once, field first, in a fixed
order. The network named here does not exist: a refusal that reached Temporal
would say so instead.
"""

from __future__ import annotations

import pytest
from temporalio.client import Client

from engine.domain.errors import NotFoundError
from engine.domain.network import NetworkRequestError
from engine.runtime.client import MeshfleetClient

ABSENT = "no-such-network"


@pytest.mark.parametrize(
    ("reason", "identity", "expected"),
    [
        (" ", "ops@host", "reason: say why the network is released (it is recorded)"),
        ("x" * 1001, "ops@host", "reason: at most 1000 characters"),
        ("stuck", " ", "by: name who releases the network (it is recorded)"),
        ("stuck", "o" * 201, "by: at most 200 characters"),
        (
            "",
            "",
            "reason: say why the network is released (it is recorded); "
            "by: name who releases the network (it is recorded)",
        ),
    ],
)
async def test_releasing_a_network_needs_a_reason_and_a_name(
    client: Client, task_queue: str, reason: str, identity: str, expected: str
) -> None:
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    with pytest.raises(NetworkRequestError) as refused:
        await meshfleet.release_network(ABSENT, reason, identity=identity)
    assert str(refused.value) == expected


@pytest.mark.parametrize(
    ("member", "reason", "identity", "expected"),
    [
        (" ", "restored", "ops@host", "member: name the member listed as left drained"),
        ("m" * 201, "restored", "ops@host", "member: at most 200 characters"),
        ("a", " ", "ops@host", "reason: say why the member is cleared (it is recorded)"),
        ("a", "restored", "", "by: name who clears the member (it is recorded)"),
        (
            "",
            "r" * 1001,
            "o" * 201,
            "member: name the member listed as left drained; "
            "reason: at most 1000 characters; by: at most 200 characters",
        ),
    ],
)
async def test_clearing_a_drained_member_needs_the_member_a_reason_and_a_name(
    client: Client, task_queue: str, member: str, reason: str, identity: str, expected: str
) -> None:
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    with pytest.raises(NetworkRequestError) as refused:
        await meshfleet.clear_drained(ABSENT, member, reason, identity=identity)
    assert str(refused.value) == expected


async def test_a_valid_release_of_an_absent_network_reaches_temporal_and_is_not_found(
    client: Client, task_queue: str
) -> None:
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    with pytest.raises(NotFoundError, match=f"network '{ABSENT}' does not exist"):
        await meshfleet.release_network(ABSENT, "stuck", identity="ops@host")
