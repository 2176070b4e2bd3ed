"""A meshfleet worker in its own process, wired exactly as production wires it.

Tests that SIGKILL a worker run it here: ``worker_process(...)`` starts
``python -m tests.worker_process ADDRESS TASK_QUEUE STATE_DIR``, which connects
to Temporal, opens the simulated fleet in STATE_DIR, runs every workflow and
activity (``engine.runtime.worker``) and prints ``ready`` once polling. The
block gets the process once it said so, and kills it (if still alive) on exit.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from activities.backends.simulated import SimulatedFleetBackend
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.telemetry import configure_logging
from engine.runtime.worker import build_worker

ROOT = Path(__file__).resolve().parents[1]
READY = b"ready"


@asynccontextmanager
async def worker_process(
    address: str, task_queue: str, state_dir: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A worker in its own process, ready to poll ``task_queue``; killed when the block ends.

    ``env``: extra environment for the worker (``MESHFLEET_POLL_INTERVAL``...).
    Its log goes to the test's stderr, which pytest shows when the test fails.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.worker_process",
        address,
        task_queue,
        str(state_dir),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        assert line.strip() == READY, f"worker process said {line!r}"
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def main(address: str, task_queue: str, state_dir: Path) -> None:
    """Run one worker over the simulated fleet in ``state_dir`` until killed."""
    configure_logging("json")
    client = await connect_client(address, ConnectionSettings(address=address))
    async with build_worker(client, task_queue, backend=SimulatedFleetBackend(state_dir)):
        print(READY.decode(), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
