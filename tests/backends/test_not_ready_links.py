"""``not_ready_links``: the gate's and verify's question, answered without the full mesh read.

The simulator answers it from its ready-link index and builds a view only for a
member with something to report. Whatever happens, the answer must be exactly
what reading the whole mesh and asking it would give.
"""

from __future__ import annotations

from engine.domain.fleet import Fault, FaultKind
from tests.backends.conftest import MEMBERS, FakeClock, LoadWorld, cluster

EVERYONE = [*MEMBERS, "delta"]


async def test_it_answers_exactly_as_the_full_mesh_read_through_joins_restarts_and_partitions(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """Second by second through a join, a Cilium upgrade, a partition and an API outage,
    for the whole mesh and with each member in focus, the two answers are equal."""
    backend = load_world(
        clusters=[
            *(cluster(name, i + 1) for i, name in enumerate(MEMBERS)),
            cluster(
                "delta",
                4,
                faults=[
                    {
                        "on": "afterUpgrade",
                        "kind": "meshPartition",
                        "peers": ["alpha"],
                        "duration": "15s",
                    }
                ],
            ),
        ]
    )
    backend.add_fault(
        "charlie", Fault(kind=FaultKind.API_UNAVAILABLE, at_sim_time=40, duration="5s")
    )
    await backend.enable_mesh("delta", network="prod-mesh", idempotency_key="join")
    for name in EVERYONE:
        await backend.connect_peers(
            name, [p for p in EVERYONE if p != name], idempotency_key=f"connect-{name}"
        )
    await backend.start_cilium_upgrade("bravo", "1.18.6", idempotency_key="cilium-bravo")
    await backend.start_cilium_upgrade("delta", "1.18.6", idempotency_key="cilium-delta")

    troubled = 0
    for _ in range(150):
        for focus in (None, *EVERYONE):
            expected = (await backend.mesh_health(EVERYONE, focus=focus)).not_ready_links()
            answered = await backend.not_ready_links(EVERYONE, focus=focus)
            assert answered == expected, f"at sim time {backend.sim_time()}, focus {focus}"
            troubled += bool(expected)
        clock.advance(1)
    assert troubled > 100, "the timeline must have put the mesh in trouble to compare anything"
    assert await backend.not_ready_links(EVERYONE) == []
