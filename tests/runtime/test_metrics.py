"""Prometheus metrics: the SDK's and meshfleet's on one port, matching what a run reports."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from engine.domain.errors import InvalidInputError
from engine.domain.run import GateState, State
from engine.runtime import devserver
from engine.runtime.client import MeshfleetClient
from engine.runtime.metrics import (
    METRICS_PORT_ENV,
    metrics_for,
    metrics_port_from,
    metrics_runtime,
    network_status_collector,
)
from engine.runtime.telemetry import MeshfleetTracingInterceptor
from tests.polling import eventually
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>.*)\})? (?P<value>\S+)$")
MESHFLEET = str(Path(sys.executable).parent / "meshfleet")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None or match.group("name") != name:
            continue
        found = dict(LABEL.findall(match.group("labels") or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group("value"))
    return total


def names(text: str) -> set[str]:
    return {m.group("name") for line in text.splitlines() if (m := SAMPLE.match(line))}


async def connect_metered(address: str, port: int) -> Client:
    """A client on a runtime of its own that serves Prometheus text on ``port``."""
    return await Client.connect(
        address,
        runtime=metrics_runtime(port, host="127.0.0.1"),
        data_converter=pydantic_data_converter,
        interceptors=[MeshfleetTracingInterceptor()],
    )


CLUSTERS = [
    Cluster("first-1", group="first"),
    Cluster(
        "first-2",
        group="first",
        faults=[{"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}],
    ),
    Cluster("second-1", group="second"),
]
#: The first stage absorbs one failure; the second waits for an approval, so the run
#: holds still in the middle while the test scrapes.
GATED = strategy(
    [
        {
            "name": "first",
            "maxAllowedFailures": "1",
            "groups": [{"name": "first", "maxAllowedFailures": "1"}],
        },
        {
            "name": "second",
            "beforeGates": [{"type": "Approval", "displayName": "go on"}],
            "groups": [{"name": "second"}],
        },
    ]
)


async def test_metrics_during_and_after_a_simulated_run_match_the_runs_report(
    temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    port = devserver.free_port()
    client = await connect_metered(temporal_server.address, port)
    async with running_fleet(client, task_queue, state_dir, CLUSTERS) as fleet:
        run = await fleet.start_run(GATED)
        waiting = await wait_until(
            run, lambda s: any(g.state is GateState.PENDING for g in s.gates())
        )
        assert waiting.state is State.RUNNING

        during = scrape(port)
        # The SDK's own metrics, with Prometheus names (counters end in _total).
        assert "temporal_workflow_task_execution_latency_bucket" in names(during)
        assert value(during, "temporal_activity_execution_latency_count") > 0
        assert value(during, "temporal_workflow_completed_total", workflow_type="MemberUpdate") == 2
        # meshfleet's, counting what the run's status says so far.
        so_far = Counter(m.state.value for _, _, m in waiting.members() if m.state.finished)
        assert so_far == {"Completed": 1, "Failed": 1}
        for outcome, count in so_far.items():
            assert (
                value(
                    during,
                    "meshfleet_member_updates_total",
                    network=fleet.network,
                    outcome=outcome,
                )
                == count
            )

        await run.approve("go on", comment="metrics test")
        final = await run.result()

        after = scrape(port)
        outcomes = Counter(m.state.value for _, _, m in final.members())
        assert outcomes == {"Completed": 2, "Failed": 1}
        for outcome, count in outcomes.items():
            assert (
                value(
                    after, "meshfleet_member_updates_total", network=fleet.network, outcome=outcome
                )
                == count
            )
        # Every member started (preflight, drain); first-2 failed its control plane.
        assert value(after, "meshfleet_member_step_duration_seconds_count", step="Preflight") == 3
        assert value(after, "meshfleet_member_step_duration_seconds_count", step="Drain") == 3
        # Restore runs only where the drain annotated something (a served global service).
        drained = {e.cluster for e in fleet.audit("serviceDrained")}
        restores = value(after, "meshfleet_member_step_duration_seconds_count", step="Restore")
        assert restores == len(drained)
        assert value(after, "meshfleet_member_step_duration_seconds_count", step="Verify") == 2
        assert value(after, "meshfleet_member_step_failures_total", step="ControlPlane") >= 1
        cp_started = len(fleet.audit("controlPlaneUpgradeStarted"))
        assert cp_started >= 2
        # The mesh-health gate ran before and after each stage and its waits are timed.
        assert value(after, "meshfleet_gate_wait_seconds_count", kind="MeshHealth") > 0
        assert "meshfleet_gate_wait_seconds_bucket" in names(after)
        # No service dipped below its baseline, as the simulator saw it too.
        assert value(after, "meshfleet_continuity_violations_total") == len(
            fleet.backend.violations()
        )


async def test_the_networks_gauge_counts_networks_by_status(
    temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    port = devserver.free_port()
    client = await connect_metered(temporal_server.address, port)
    metrics = metrics_for(client.service_client.config.runtime)  # type: ignore[arg-type]
    async with (
        running_fleet(client, task_queue, state_dir, [Cluster("gauge-1")]) as fleet,
        network_status_collector(client, metrics, interval=dt.timedelta(milliseconds=200)),
    ):
        await eventually(
            lambda: value(scrape(port), "meshfleet_networks", status="Connected") >= 1,
            timeout=60,
            what="the gauge to count the Connected network",
        )
        listed = await MeshfleetClient(client, task_queue=fleet.task_queue).list_networks()
        text = scrape(port)
        assert value(text, "meshfleet_networks") == len(listed)
        connected = [s for s in listed if s.status is not None and s.status.value == "Connected"]
        assert value(text, "meshfleet_networks", status="Connected") == len(connected)


def test_the_metrics_port_comes_from_the_flag_then_the_environment() -> None:
    assert metrics_port_from(9464, {METRICS_PORT_ENV: "9000"}) == 9464
    assert metrics_port_from(None, {METRICS_PORT_ENV: "9000"}) == 9000
    assert metrics_port_from(None, {}) is None


def test_a_bad_metrics_port_names_the_variable_and_the_rule() -> None:
    with pytest.raises(InvalidInputError) as error:
        metrics_port_from(None, {METRICS_PORT_ENV: "ninety"})
    assert error.value.errors[0].path == METRICS_PORT_ENV
    assert "1..65535" in error.value.errors[0].message
    with pytest.raises(InvalidInputError) as error:
        metrics_port_from(70000, {})
    assert error.value.errors[0].path == "--metrics-port"


async def test_the_worker_command_serves_metrics_on_the_port_from_the_environment(
    temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    port = devserver.free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        METRICS_PORT_ENV: str(port),
    }
    process = await asyncio.create_subprocess_exec(
        MESHFLEET,
        "worker",
        "--task-queue",
        task_queue,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def served() -> str | None:
            assert process.returncode is None, "the worker exited"
            try:
                text = await asyncio.to_thread(scrape, port)
            except OSError:
                return None  # not listening yet
            return text if "meshfleet_networks" in names(text) and "temporal_" in text else None

        text = await eventually(served, timeout=60, what="meshfleet metrics on /metrics")
        assert text is not None
        assert any(name.startswith("temporal_") for name in names(text))
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert f"metrics on :{port}/metrics" in stdout.decode()


def test_a_bad_metrics_port_in_the_environment_is_exit_code_two_without_a_traceback() -> None:
    result = subprocess.run(
        [MESHFLEET, "worker"],
        env={**os.environ, METRICS_PORT_ENV: "ninety", "TEMPORAL_ADDRESS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert METRICS_PORT_ENV in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


#: Both kinds of gate a person configures, before the only stage: the run holds at each
#: until the test approves it (a ScheduledStart next week opens early by approval).
PERSON_GATES = strategy(
    [
        {
            "name": "only",
            "beforeGates": [
                {"type": "Approval", "displayName": "go on"},
                {
                    "type": "ScheduledStart",
                    "displayName": "next tuesday",
                    "startDay": "Tuesday",
                    "startTime": "02:00",
                },
            ],
            "groups": [{"name": "only"}],
        }
    ]
)


async def test_the_gate_wait_histogram_covers_approval_and_scheduled_start_gates(
    temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    port = devserver.free_port()
    client = await connect_metered(temporal_server.address, port)
    async with running_fleet(
        client, task_queue, state_dir, [Cluster("gates-1", group="only")]
    ) as fleet:
        run = await fleet.start_run(PERSON_GATES)
        for gate_id in ("only/before/0", "only/before/1"):
            await wait_until(
                run,
                lambda s, gate_id=gate_id: any(
                    g.id == gate_id and g.state is GateState.PENDING for g in s.gates()
                ),
            )
            assert value(scrape(port), "meshfleet_gate_wait_seconds_count", kind="Approval") == (
                0 if gate_id.endswith("0") else 1
            )
            await run.approve(gate_id, comment="metrics test")
        final = await run.result()
        assert final.state is State.COMPLETED, final.error

        after = scrape(port)
        assert value(after, "meshfleet_gate_wait_seconds_count", kind="Approval") == 1
        assert value(after, "meshfleet_gate_wait_seconds_count", kind="ScheduledStart") == 1
        # The health gates are still timed beside them.
        assert value(after, "meshfleet_gate_wait_seconds_count", kind="MeshHealth") > 0
