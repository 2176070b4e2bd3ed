"""A meshfleet worker in its own process (for tests that SIGKILL workers).

Usage: python -m tests.runs.worker_process ADDRESS TASK_QUEUE STATE_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from activities.backends.simulated import SimulatedFleetBackend
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.telemetry import configure_logging
from engine.runtime.worker import build_worker


async def main(address: str, task_queue: str, state_dir: Path) -> None:
    configure_logging("json")
    client = await connect_client(address, ConnectionSettings(address=address))
    async with build_worker(client, task_queue, backend=SimulatedFleetBackend(state_dir)):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
