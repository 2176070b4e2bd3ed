"""A meshfleet worker as its own process, wired exactly as production wires it.

``python -m tests.network.worker_process ADDRESS TASK_QUEUE STATE_DIR`` connects
to Temporal, opens the simulated fleet in STATE_DIR and runs every workflow and
activity (``engine.runtime.worker``) until killed. It prints ``ready`` once
polling. Used by the test that SIGKILLs a worker in the middle of a join.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from activities.backends.simulated import SimulatedFleetBackend
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.worker import build_worker


async def main(address: str, task_queue: str, state_dir: Path) -> None:
    client = await connect_client(address, ConnectionSettings(address=address))
    worker = build_worker(client, task_queue, backend=SimulatedFleetBackend(state_dir))
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
