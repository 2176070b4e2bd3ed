"""One of the benchmark's worker processes (``update_run.py --workers N`` starts N of them).

    python benchmarks/worker_process.py ADDRESS FLOOR_QUEUE QUEUE=STATE_DIR [QUEUE=STATE_DIR ...]

Connects to the benchmark's server and polls the floor's task queue and, per
network, the network's task queue with every meshfleet workflow and activity
over the simulated fleet stored in STATE_DIR. Every worker process of a round
opens the same STATE_DIR: they share one world, one transaction per access,
as production workers share one set of real clusters. Prints ``ready`` once
all its workers poll, then runs until SIGTERM or SIGINT, on which it leaves
at once (the benchmark reads its CPU and memory from ``/proc`` before it
stops it). It dies with the benchmark too (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from floor_workflows import FloorMemberWorkflow, FloorRunWorkflow, floor_noop

#: prctl(2): the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the benchmark dies, however it dies (even SIGKILL)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def leave_at_once(signum: int, _frame: object) -> None:
    """The benchmark is done with this worker: no graceful drain of work that is over."""
    os._exit(128 + signum)


async def serve(address: str, floor_queue: str, networks: list[tuple[str, Path]]) -> None:
    from temporalio.worker import Worker

    from activities.backends.simulated import SimulatedFleetBackend
    from engine.runtime.connection import ConnectionSettings, connect_client
    from engine.runtime.worker import build_worker, workflow_runner

    client = await connect_client(address, ConnectionSettings(address=address))
    workers = [
        Worker(
            client,
            task_queue=floor_queue,
            workflows=[FloorRunWorkflow, FloorMemberWorkflow],
            activities=[floor_noop],
            workflow_runner=workflow_runner(),
        ),
        *(
            build_worker(client, queue, backend=SimulatedFleetBackend(state))
            for queue, state in networks
        ),
    ]
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        print("ready", flush=True)
        os.dup2(2, 1)  # nothing reads the pipe any more: anything printed goes to stderr
        await asyncio.Event().wait()


def main() -> None:
    die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, leave_at_once)
    address, floor_queue, *pairs = sys.argv[1:]
    networks = []
    for pair in pairs:
        queue, _, state = pair.partition("=")
        networks.append((queue, Path(state)))
    from engine.runtime.telemetry import configure_logging

    configure_logging("console")  # warnings and errors on stderr, like the benchmark's own
    asyncio.run(serve(address, floor_queue, networks))


if __name__ == "__main__":
    main()
