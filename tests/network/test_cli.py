"""``meshfleet network ...`` end to end: the real CLI process, the session server, a worker here."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.network import (
    UPDATE_ACQUIRE,
    UPDATE_REPORT_LEFT_DRAINED,
    NetworkDescription,
    network_workflow_id,
)
from engine.domain.network_requests import AcquireRequest, ReportLeftDrainedRequest
from engine.runtime import devserver
from tests.network.conftest import cluster, fleet
from tests.runtime.serverproc import MESHFLEET


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


@pytest.fixture
def cli(temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path) -> object:
    """Run ``meshfleet --address <session server> ...`` on this test's task queue."""

    async def run(*args: str, address: str | None = None) -> Ran:
        env = {
            **os.environ,
            "MESHFLEET_TASK_QUEUE": task_queue,
            "MESHFLEET_STATE_DIR": str(state_dir),
            "MESHFLEET_MESH_READY_TIMEOUT": "10s",
        }
        process = await asyncio.create_subprocess_exec(
            MESHFLEET,
            "--address",
            address or temporal_server.address,
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())

    return run


SERVICES = [
    {"namespace": "shop", "name": "cart", "clusters": {"a": 2, "b": 2}},
    {"namespace": "legacy", "name": "billing", "clusters": {"a": 1}, "namespaceGlobal": False},
]


async def test_the_cli_runs_a_network_through_its_whole_life(
    backend: SimulatedFleetBackend, worker: Worker, cli: object, network_name: str
) -> None:
    """create, join, show, list, services, remove and delete, in table and JSON form."""
    run = cli  # type: ignore[assignment]
    backend.load(
        fleet(
            [
                cluster("a", 1),
                cluster("b", 2),
                cluster("c", 3),
                cluster("t", 4, networkMode="overlay"),
            ],
            services=SERVICES,
        )
    )

    created = await run("network", "create", network_name, "--member", "a", "-m", "b")
    assert created.code == 0, created.stderr
    assert "joined" in created.stdout
    assert "Connected" in created.stdout

    joined = await run("network", "join", network_name, "c", "t", "--output", "json")
    assert joined.code == 1, joined.stderr  # one member was rejected
    body = joined.json()
    assert isinstance(body, dict)
    outcomes = {m["cluster"]: (m["outcome"], m.get("rule")) for m in body["members"]}
    assert outcomes == {"c": ("joined", None), "t": ("rejected", "flatNetwork")}

    shown = await run("network", "show", network_name)
    assert shown.code == 0, shown.stderr
    assert f"network {network_name}: Connected" in shown.stdout
    described = (await run("--output", "json", "network", "show", network_name)).json()
    assert isinstance(described, dict)
    assert [m["name"] for m in described["members"]] == ["a", "b", "c"]
    assert [m["clusterId"] for m in described["members"]] == [1, 2, 3]

    services = await run("network", "services", network_name, "--output", "json")
    assert services.code == 0, services.stderr
    report = services.json()
    assert isinstance(report, dict)
    problems = {f"{s['namespace']}/{s['name']}": s["problems"] for s in report["services"]}
    assert problems["shop/cart"] == []
    assert "lacks clustermesh.cilium.io/global" in problems["legacy/billing"][0]
    table = await run("network", "services", network_name)
    assert "warning" in table.stdout
    assert "legacy/billing" in table.stdout

    removed = await run("network", "remove", network_name, "c")
    assert removed.code == 0, removed.stderr
    assert "removed" in removed.stdout

    deleted = await run("network", "delete", network_name, "--force", "--output", "json")
    assert deleted.code == 0, deleted.stderr
    result = deleted.json()
    assert isinstance(result, dict)
    assert result["deleted"] is True


async def test_the_cli_says_when_a_change_is_queued_behind_an_update_run(
    backend: SimulatedFleetBackend,
    worker: Worker,
    client: Client,
    cli: object,
    network_name: str,
) -> None:
    """The command returns at once, exit 0, and says the change waits for the run."""
    run = cli  # type: ignore[assignment]
    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    assert (await run("network", "create", network_name, "-m", "a")).code == 0
    await client.get_workflow_handle(network_workflow_id(network_name)).execute_update(
        UPDATE_ACQUIRE, AcquireRequest(run_id="nightly"), result_type=NetworkDescription
    )

    queued = await run("network", "join", network_name, "b")

    assert queued.code == 0, queued.stderr
    assert "queued" in queued.stdout
    assert "update run 'nightly' holds network" in queued.stdout
    listed = await run("network", "list", "--output", "json")
    entries = {e["name"]: e for e in listed.json()}  # type: ignore[attr-defined]
    assert entries[network_name]["holder"] == "nightly"
    assert entries[network_name]["pending"] == 1


async def test_release_is_refused_while_the_holder_runs_and_recorded_once_it_is_gone(
    backend: SimulatedFleetBackend,
    worker: Worker,
    client: Client,
    cli: object,
    network_name: str,
) -> None:
    """A hold taken by earlier code (no execution named): the operator frees it only once
    ``updaterun/<network>/<run>`` is no longer running; who and why are in the log."""
    run = cli  # type: ignore[assignment]
    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    assert (await run("network", "create", network_name, "-m", "a")).code == 0
    # The holder: a workflow under the run's id that no worker polls (it stays Running).
    holder = await client.start_workflow(
        "LeaseHolder",
        args=[network_name, "nightly"],
        id=f"updaterun/{network_name}/nightly",
        task_queue=f"nobody-polls-{uuid.uuid4().hex}",
    )
    await client.get_workflow_handle(network_workflow_id(network_name)).execute_update(
        UPDATE_ACQUIRE, AcquireRequest(run_id="nightly"), result_type=NetworkDescription
    )
    assert (await run("network", "join", network_name, "b")).code == 0  # queued

    refused = await run("network", "release", network_name, "--reason", "stuck?")
    assert refused.code == 2, refused.stderr
    assert "update run 'nightly' is still running" in refused.stderr
    assert "Traceback" not in refused.stderr
    shown = (await run("--output", "json", "network", "show", network_name)).json()
    assert isinstance(shown, dict)
    assert shown["holder"] == "nightly"

    await holder.terminate("lost")
    released = await run(
        "network", "release", network_name, "--reason", "run lost in the outage", "--by", "alice"
    )
    assert released.code == 0, released.stderr
    assert "alice released the network" in released.stdout
    described = (await run("--output", "json", "network", "show", network_name)).json()
    assert isinstance(described, dict)
    assert described.get("holder") is None
    entry = next(e for e in described["log"] if e["event"] == "releasedByOperator")
    assert "alice" in entry["message"]
    assert "run lost in the outage" in entry["message"]
    assert "terminated" in entry["message"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["network", "release", "some-network", "--reason", " "], "reason: say why"),
        (["network", "release", "Bad_Name", "--reason", "x"], "network name 'Bad_Name'"),
    ],
)
async def test_release_with_bad_input_exits_2_naming_the_field(
    cli: object, args: list[str], needle: str
) -> None:
    run = cli  # type: ignore[assignment]
    ran = await run(*args)
    assert ran.code == 2, ran.stderr
    assert needle in ran.stderr
    assert "Traceback" not in ran.stderr


async def test_release_of_a_network_nobody_holds_is_refused(
    backend: SimulatedFleetBackend, worker: Worker, cli: object, network_name: str
) -> None:
    run = cli  # type: ignore[assignment]
    backend.load(fleet([cluster("a", 1)]))
    assert (await run("network", "create", network_name, "-m", "a")).code == 0
    ran = await run("network", "release", network_name, "--reason", "tidy up")
    assert ran.code == 2, ran.stderr
    assert "is not held by any update run" in ran.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["network", "show", "no-such-network"], 1, "network 'no-such-network' does not exist"),
        (["network", "join", "no-such-network", "a"], 1, "does not exist"),
        (["network", "create", "Bad_Name"], 2, "network name 'Bad_Name'"),
        (["network", "join", "some-network", "UPPER"], 2, "cluster name 'UPPER'"),
        (["network", "join", "some-network", "a", "a"], 2, "appears more than once"),
    ],
)
async def test_cli_errors_are_one_clear_line_and_a_non_zero_exit(
    cli: object, args: list[str], code: int, needle: str
) -> None:
    """Unknown network, bad names, duplicate members: one line on stderr, no traceback."""
    run = cli  # type: ignore[assignment]
    ran = await run(*args)
    assert ran.code == code, ran.stderr
    assert needle in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert "Traceback" not in ran.stderr + ran.stdout


async def test_an_unreachable_temporal_is_one_clear_line_and_a_non_zero_exit(
    cli: object,
) -> None:
    """No server at the address: one line that names it."""
    run = cli  # type: ignore[assignment]
    port = devserver.free_port()
    ran = await run("network", "list", address=f"127.0.0.1:{port}")
    assert ran.code == 1
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert "Traceback" not in ran.stderr


async def test_network_show_lists_a_member_left_drained_until_clear_drained_clears_it(
    backend: SimulatedFleetBackend, worker: Worker, cli: object, client: Client, network_name: str
) -> None:
    """A run reported ``a`` left drained (as its activity does): ``show`` says so with the
    service and the run; ``clear-drained`` records who and why and the line goes."""
    run = cli  # type: ignore[assignment]
    backend.load(fleet([cluster("a", 1), cluster("b", 2)], services=SERVICES))
    assert (await run("network", "create", network_name, "-m", "a", "-m", "b")).code == 0
    await client.get_workflow_handle(network_workflow_id(network_name)).execute_update(
        UPDATE_REPORT_LEFT_DRAINED,
        ReportLeftDrainedRequest(run_id="nightly", member="a", services=["shop/cart"]),
        result_type=NetworkDescription,
    )
    shown = await run("network", "show", network_name)
    assert shown.code == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("LEFT DRAINED"))
    assert "a still has service.cilium.io/shared" in line
    assert "shop/cart" in line
    assert "'nightly'" in line

    clear = ["clear-drained", network_name, "--member", "a", "--reason", "fixed", "--by", "bob"]
    cleared = await run("network", *clear)
    assert cleared.code == 0, cleared.stderr
    assert "bob cleared a" in cleared.stdout
    described = (await run("--output", "json", "network", "show", network_name)).json()
    assert isinstance(described, dict)
    assert described["leftDrained"] == []
    assert "LEFT DRAINED" not in (await run("network", "show", network_name)).stdout


async def test_clear_drained_of_a_member_not_listed_exits_2_naming_the_member(
    backend: SimulatedFleetBackend, worker: Worker, cli: object, network_name: str
) -> None:
    run = cli  # type: ignore[assignment]
    backend.load(fleet([cluster("a", 1)]))
    assert (await run("network", "create", network_name, "-m", "a")).code == 0
    ran = await run("network", "clear-drained", network_name, "--member", "a", "--reason", "x")
    assert ran.code == 2, ran.stderr
    assert "member: 'a' is not listed as left drained" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--member", "a", "--reason", " "], "reason: say why"),
        (["--member", " ", "--reason", "x"], "member: name the member"),
    ],
)
async def test_clear_drained_with_bad_input_exits_2_naming_the_field(
    cli: object, args: list[str], needle: str
) -> None:
    run = cli  # type: ignore[assignment]
    ran = await run("network", "clear-drained", "some-network", *args)
    assert ran.code == 2, ran.stderr
    assert needle in ran.stderr
    assert "Traceback" not in ran.stderr
