"""Recorders of the member workflow's drain/restore states: run by hand, never collected.

    .venv/bin/python -m pytest tests/histories/recorders_drain.py -k NAME

Like ``recorders.py``: each recorder drives one member into one state on the
code of the commit it names and writes its history with ``record``. They guard
the change that split the drain into "annotate, then wait" and made the
restore run on every path (``workflows/member_update.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from engine.domain.fleet import Fault
from engine.domain.run import MemberStep, State, member_workflow_id
from tests.histories.record import record
from tests.runs.harness import Cluster, strategy, wait_until
from tests.runs.test_drain_restore import FAST, drain_fleet, service_in, start_run

ONE_STAGE = [{"name": "all", "groups": [{"name": "all"}]}]


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


def _note(recorder: str, what: str) -> str:
    return f"Recorded at {_commit()} by recorders_drain.py::{recorder}.\n\n{what}"


async def _step_of(client: Client, workflow_id: str, step: MemberStep) -> None:
    """Wait until the member workflow reports ``step`` in progress."""
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(600):
        with contextlib.suppress(RPCError):  # not started yet
            if await handle.query("step") == step.value:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never reached {step.value}")


async def test_record_a_member_completed_with_a_global_service(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A member serving a global service: drained, upgraded, verified, restored."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        what = "Member a-1 serves shop/checkout; it completed every step and was restored."
        await record(
            client,
            member,
            "MemberUpdate",
            "completed-with-service",
            _note("test_record_a_member_completed_with_a_global_service", what),
        )


async def test_record_a_member_failed_at_verify(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Its endpoints never come back after the upgrade: verify times out, restore runs."""
    lost = Fault(kind="endpointsLost", on="afterUpgrade", service="shop/checkout")
    clusters = [Cluster("a-1", group="all", faults=[lost.model_dump(by_alias=True, mode="json")])]
    clusters.append(Cluster("a-2", group="all"))
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(
            fleet,
            strategy(
                [{"name": "all", "maxAllowedFailures": "1", "groups": [{"name": "all"}]}],
                meshReadyTimeout="2s",
            ),
        )
        status = await wait_until(
            run, lambda s: (m := s.member("a-1")) is not None and m.state is State.FAILED
        )
        member = status.member("a-1")
        assert member is not None
        # On the code this was recorded on, the restore's own timeout hides verify's.
        assert "verify" in (member.message or "") or "route" in (member.message or "")
        await record(
            client,
            member_workflow_id(fleet.network, status.run_id, "a-1"),
            "MemberUpdate",
            "failed-at-verify",
            _note(
                "test_record_a_member_failed_at_verify",
                "a-1 failed at verify (lost endpoints); the restore ran, then timed out.",
            ),
        )
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recorded")


async def test_record_a_member_mid_drain(client: Client, task_queue: str, state_dir: Path) -> None:
    """A slow mesh holds the drain's wait: the history ends with the drain in flight."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        mesh_propagation="4000s",
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.status()
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        await _step_of(client, member, MemberStep.DRAIN)
        await wait_drain_started(fleet.audit, "a-1")
        await record(
            client,
            member,
            "MemberUpdate",
            "mid-drain",
            _note("test_record_a_member_mid_drain", "a-1's drain annotated, waiting on peers."),
        )
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recorded")


async def wait_drain_started(audit: object, cluster: str) -> None:
    """Wait until the audit shows ``cluster``'s service drained."""
    for _ in range(600):
        if any(e.cluster == cluster for e in audit("serviceDrained")):  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cluster} was never drained")


async def test_record_a_member_mid_control_plane(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A ``hang`` fault holds the control-plane upgrade after the drain completed."""
    hang = {"kind": "hang", "on": "controlPlaneUpgrade"}
    clusters = [Cluster("a-1", group="all", faults=[hang]), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.status()
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        await _step_of(client, member, MemberStep.CONTROL_PLANE)
        await record(
            client,
            member,
            "MemberUpdate",
            "mid-control-plane",
            _note(
                "test_record_a_member_mid_control_plane",
                "a-1 drained; its control-plane upgrade is held by a hang fault.",
            ),
        )
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recorded")


async def test_record_a_member_whose_drain_timed_out(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Propagation longer than the drain timeout: the drain step fails (today: no restore)."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    timings = FAST.model_copy(update={"drain_timeout": dt.timedelta(seconds=1)})
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        mesh_propagation="4000s",
    ) as fleet:
        run = await start_run(
            fleet,
            strategy([{"name": "all", "maxAllowedFailures": "2", "groups": [{"name": "all"}]}]),
            timings,
        )
        status = await wait_until(
            run, lambda s: (m := s.member("a-1")) is not None and m.state is State.FAILED
        )
        await record(
            client,
            member_workflow_id(fleet.network, status.run_id, "a-1"),
            "MemberUpdate",
            "drain-timed-out",
            _note(
                "test_record_a_member_whose_drain_timed_out",
                "a-1's drain wait timed out; on this code nothing restored it.",
            ),
        )
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recorded")


async def test_record_a_member_cancelled_mid_control_plane(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The run ends (terminated) while a-1's upgrade hangs: the child is cancelled, restores."""
    hang = {"kind": "hang", "on": "controlPlaneUpgrade"}
    clusters = [Cluster("a-1", group="all", faults=[hang]), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.status()
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        await _step_of(client, member, MemberStep.CONTROL_PLANE)
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recording")
        child = client.get_workflow_handle(member)
        for _ in range(1200):
            if (await child.describe()).close_time is not None:
                break
            await asyncio.sleep(0.05)
        await record(
            client,
            member,
            "MemberUpdate",
            "cancelled-mid-control-plane",
            _note(
                "test_record_a_member_cancelled_mid_control_plane",
                "The run was terminated while a-1's upgrade hung: a-1 was cancelled "
                "(REQUEST_CANCEL) and restored its services.",
            ),
        )


# --- after the drain-record-first patch: the states it added ------------------------------


async def test_record_a_drain_timed_out_and_restored(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Propagation longer than the drain timeout: the wait fails, the record is restored."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    timings = FAST.model_copy(update={"drain_timeout": dt.timedelta(seconds=1)})
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        mesh_propagation="4000s",
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE), timings)
        status = await wait_until(
            run, lambda s: (m := s.member("a-1")) is not None and m.state is State.FAILED
        )
        await record(
            client,
            member_workflow_id(fleet.network, status.run_id, "a-1"),
            "MemberUpdate",
            "drain-timed-out-restored",
            _note(
                "test_record_a_drain_timed_out_and_restored",
                "drain-record-first: a-1's drain wait timed out; its record was restored.",
            ),
        )
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recorded")


async def test_record_a_member_cancelled_mid_drain_and_restored(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The run is terminated while a-1 waits on its drain: a-1 is cancelled and restores."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        mesh_propagation="40000s",
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.status()
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        await _step_of(client, member, MemberStep.DRAIN)
        await wait_drain_started(fleet.audit, "a-1")
        await client.get_workflow_handle(run.workflow_id).terminate(reason="recording")
        child = client.get_workflow_handle(member)
        for _ in range(1200):
            if (await child.describe()).close_time is not None:
                break
            await asyncio.sleep(0.05)
        await record(
            client,
            member,
            "MemberUpdate",
            "cancelled-mid-drain-restored",
            _note(
                "test_record_a_member_cancelled_mid_drain_and_restored",
                "drain-record-first: the run was terminated while a-1 waited on its drain; "
                "a-1 was cancelled (REQUEST_CANCEL) and restored its services.",
            ),
        )
