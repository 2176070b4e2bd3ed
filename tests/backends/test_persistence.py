"""The world lives in SQLite: it outlives processes and survives concurrent writers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from activities.backends.simulated import DATABASE_NAME, AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from tests.backends.conftest import MEMBERS, fleet_document

REPO = Path(__file__).resolve().parents[2]

#: Runs in a child process with the real clock (the production path).
PRELUDE = """
import asyncio, json, sys, time
from pathlib import Path
from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
state = Path(sys.argv[1])
backend = SimulatedFleetBackend(state)
"""


def run_child(body: str, *args: str) -> subprocess.Popen[str]:
    """Start a Python child process running PRELUDE + body with ``args``."""
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,  # so that the child imports this repository's ``tests`` helpers
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    """Wait for a child; fail the test with its stderr if it failed."""
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def test_the_world_survives_a_process_restart(world_dir: Path) -> None:
    """One process loads a fleet, starts an upgrade and drains; a later one finds it all."""
    document = fleet_document(timeScale=0.0001)
    writer = run_child(
        """
        backend.load(parse_fleet(json.loads(sys.argv[2])))
        async def main():
            await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="cp")
            await backend.set_service_annotations(
                "bravo", "shop", "checkout", {"service.cilium.io/shared": "false"},
                idempotency_key="drain")
        asyncio.run(main())
        """,
        str(world_dir),
        json.dumps(document),
    )
    finish(writer)
    reader = run_child(
        """
        from tests.polling import eventually
        async def main():
            async def finished():
                op = await backend.get_operation("alpha", "cp")
                return op if op.state.value != "Running" else None
            # 600 simulated seconds at timeScale 0.0001: the upgrade ends 0.06 s after it began.
            op = await eventually(finished, timeout=30, what="the stored upgrade to finish")
            member = await backend.describe_member("alpha")
            services = await backend.list_global_services(["alpha", "bravo", "charlie"])
            print(json.dumps({
                "state": op.state.value,
                "version": member.kubernetes_version,
                "bravo": services[0].per_cluster["bravo"].annotations,
                "events": [e.event.value for e in backend.audit()],
            }))
        asyncio.run(main())
        """,
        str(world_dir),
    )
    seen = json.loads(finish(reader))
    assert seen["state"] == "Succeeded"
    assert seen["version"] == "1.33.0"
    assert seen["bravo"]["service.cilium.io/shared"] == "false"
    assert "controlPlaneUpgradeStarted" in seen["events"]
    assert "controlPlaneUpgradeCompleted" in seen["events"]
    assert "serviceDrained" in seen["events"]


def test_two_processes_writing_at_once_corrupt_nothing(world_dir: Path) -> None:
    """Two writers interleave 40 annotation changes each: every one is kept, once, in order."""
    SimulatedFleetBackend(world_dir).load(parse_fleet(fleet_document(timeScale=0.001)))
    writers = [
        run_child(
            """
            name = sys.argv[2]
            print("ready", flush=True)
            sys.stdin.readline()  # "go": both writers are up, so their writes overlap
            async def main():
                for i in range(40):
                    value = "false" if i % 2 == 0 else "true"
                    await backend.set_service_annotations(
                        name, "shop", "checkout", {"service.cilium.io/shared": value},
                        idempotency_key=f"{name}-{i}")
                    await backend.mesh_health(["alpha", "bravo", "charlie"])
            asyncio.run(main())
            """,
            str(world_dir),
            name,
        )
        for name in ("alpha", "bravo")
    ]
    for writer in writers:  # a start barrier, not a guessed start time
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.stderr
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        finish(writer)

    with sqlite3.connect(world_dir / DATABASE_NAME) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seqs = [row[0] for row in connection.execute("SELECT seq FROM audit ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    backend = SimulatedFleetBackend(world_dir)
    world = backend.world()
    assert sum(1 for key in world.idempotency if key.startswith(("alpha-", "bravo-"))) == 80
    changes = [
        e
        for e in backend.audit()
        if e.event in (AuditEvent.SERVICE_DRAINED, AuditEvent.SERVICE_RESTORED)
    ]
    assert len(changes) == 80
    for name in ("alpha", "bravo"):
        mine = [
            e.details["current"]["service.cilium.io/shared"] for e in changes if e.cluster == name
        ]
        # Each "true" undoes a drain: the drain record puts back what was there (no annotation).
        assert mine == ["false", None] * 20, "each writer's changes land in its own order"
    times = [e.sim_time for e in backend.audit()]
    assert times == sorted(times)
    assert sorted(world.clusters) == sorted(MEMBERS)
