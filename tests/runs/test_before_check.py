"""A stage's mesh check before it, met by the check after the stage it follows.

Since ``run-before-check-reuses-after`` a stage that starts right after the stage
it depends on passed its checks takes that healthy mesh check as its own check
before: at most ``MESH_CHECK_FRESH_FOR`` old, no member started since, the same
members. Anything that lets time pass in between (a soak, a gate held for
longer) makes it ask the mesh again. Runs recorded before the patch replay
asking every time (``tests/histories/UpdateRun``).
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.testing import TimeSkipper

from engine.domain import run as contract
from engine.domain.run import State
from engine.runtime.runs import UpdateRunHandle
from tests.runs.harness import Cluster, running_fleet, strategy

CHAIN = [Cluster("c-1", group="first"), Cluster("c-2", group="second")]


async def mesh_checks(run: UpdateRunHandle, client: Client) -> list[str]:
    """The summaries of the run's mesh health checks, in the order it asked them."""
    history = await client.get_workflow_handle(run.workflow_id).fetch_history()
    converter = client.data_converter.payload_converter
    return [
        converter.from_payload(event.user_metadata.summary, str)
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name
        == contract.CHECK_MESH_HEALTH
    ]


async def _two_stages_done(
    client: Client,
    task_queue: str,
    state_dir: Path,
    first: dict[str, object],
    starter: Client | None = None,
    **health: str,
) -> list[str]:
    """A chain of two one-member stages (``first`` tunes the first), started through
    ``starter`` (else ``client``) and run to its end: its mesh checks."""
    chain = strategy(
        [
            {"name": "first", "groups": [{"name": "first"}], **first},
            {"name": "second", "groups": [{"name": "second"}]},
        ],
        **health,
    )
    async with running_fleet(client, task_queue, state_dir, CHAIN) as fleet:
        run = await fleet.start_run(chain, via=starter)
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        return await mesh_checks(run, client)


async def test_the_check_after_a_stage_stands_for_the_next_stages_check_before_it(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    checks = await _two_stages_done(client, task_queue, state_dir, first={})
    assert checks == [
        "mesh health before stage first",
        "mesh health after stage first",
        "mesh health after stage second",
    ]


async def test_a_soak_between_two_stages_makes_the_next_stage_ask_the_mesh_again(
    client: Client, time_skipping: TimeSkipper, task_queue: str, state_dir: Path
) -> None:
    """Ten minutes of soak later, the check after the first stage is too old to stand."""
    checks = await _two_stages_done(
        client,
        task_queue,
        state_dir,
        first={"afterStageWait": "10m"},
        starter=time_skipping.client,
        soakCheckInterval="5m",
    )
    assert checks[:2] == ["mesh health before stage first", "mesh health after stage first"]
    assert checks[-2:] == ["mesh health before stage second", "mesh health after stage second"]
