"""The embedded server dies in the middle of a run and comes back on the same database.

Its own server (not the session's): own state directory, pinned free ports, so
it can be killed and started again where the worker and the client expect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections import Counter
from pathlib import Path

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.domain.run import State
from engine.domain.runspec import RunSpec
from engine.runtime import devserver
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.runs import start_update_run
from engine.runtime.worker import build_worker
from strategies import parse_strategy
from tests.polling import eventually
from tests.runs.harness import TIMINGS, Cluster, create_network, fleet_document, strategy

#: A control-plane upgrade takes 1.2 s: long enough to kill the server in the middle of one.
TIME_SCALE = 0.002
CLUSTERS = [Cluster(f"c-{index}", group="first" if index < 2 else "rest") for index in range(6)]


async def _start(state_dir: Path, ports: devserver.ServerPorts) -> devserver.EmbeddedServer:
    server = await devserver.start_embedded_server(
        state_dir,
        grpc_port=ports.grpc,
        ui_port=None,
        http_port=ports.http,
        metrics_port=ports.metrics,
        ui=False,
    )
    assert server.owned
    return server


async def test_a_run_completes_across_a_server_restart_with_each_control_plane_upgraded_once(
    tmp_path: Path,
) -> None:
    ports = devserver.ServerPorts.choose()
    server_dir = tmp_path / "temporal"
    server = await _start(server_dir, ports)
    try:
        client = await connect_client(server.address, ConnectionSettings(address=server.address))
        backend = SimulatedFleetBackend(tmp_path / "fleet")
        backend.load(parse_fleet(fleet_document(CLUSTERS, time_scale=TIME_SCALE)), reset=True)
        queue = f"restart-{uuid.uuid4().hex[:8]}"
        stages = [
            {"name": "first", "groups": [{"name": "first", "maxConcurrency": "2"}]},
            {"name": "rest", "groups": [{"name": "rest", "maxConcurrency": "2"}]},
        ]
        async with build_worker(client, queue, backend=backend):
            await create_network(client, queue, "restart", [c.name for c in CLUSTERS])
            spec = RunSpec(
                network="restart",
                kubernetes_version="1.33",
                strategy=parse_strategy(strategy(stages)),
            )
            handle = await start_update_run(client, queue, spec, timings=TIMINGS)

            async def upgrading() -> bool:
                """Whether the first control-plane upgrade is under way."""
                event = AuditEvent.CONTROL_PLANE_UPGRADE_STARTED
                return bool(await asyncio.to_thread(backend.audit, event=event))

            await eventually(upgrading, timeout=60, what="a control-plane upgrade to start")
            assert not (await handle.status()).state.finished
            # A crash, not a shutdown: the whole process group, at once.
            assert server.pid is not None
            os.killpg(server.pid, signal.SIGKILL)
            server.stop()

            def released() -> bool:
                with socket.socket() as probe:
                    return probe.connect_ex(("127.0.0.1", ports.grpc)) != 0

            await eventually(released, what="the killed server's port to be free again")
            server = await _start(server_dir, ports)

            final = await asyncio.wait_for(handle.result(), timeout=120)

        assert final.state is State.COMPLETED, final.error
        assert all(m.state is State.COMPLETED for _, _, m in final.members())
        started = Counter(
            e.cluster for e in backend.audit(event=AuditEvent.CONTROL_PLANE_UPGRADE_STARTED)
        )
        assert started == {c.name: 1 for c in CLUSTERS}
    finally:
        with contextlib.suppress(Exception):
            server.stop()
