"""The benchmark's worker processes, and the CPU and memory it reads from ``/proc``."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench_inputs import Network

T = TypeVar("T")

WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")
#: How long a worker process may take to connect and poll before the benchmark gives up.
WORKER_READY_TIMEOUT = 120.0
#: How long a stopped worker process may take to leave before it is killed.
WORKER_STOP_GRACE = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Worker processes started and not stopped yet (stopped on exit and on signals too).
_children: set[subprocess.Popen[bytes]] = set()


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def group_cpu_seconds(group: int) -> float:
    """CPU seconds used so far by the live processes of process group ``group``."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except OSError:  # gone in between
            continue
        if int(fields[2]) == group:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def stop_child(child: subprocess.Popen[bytes]) -> None:
    """Stop one worker process: SIGTERM, then SIGKILL after a grace period."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=WORKER_STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    _children.discard(child)


def stop_children() -> None:
    """Stop every worker process still running (at exit, on failure, on signals)."""
    for child in list(_children):
        stop_child(child)


def kill_children() -> None:
    """SIGKILL every worker process still running (on a signal: no grace)."""
    for child in list(_children):
        with contextlib.suppress(OSError):
            child.kill()


atexit.register(stop_children)


class WorkerDiedError(RuntimeError):
    """A worker process ended while the round still needed it."""


def spawn_worker(command: list[str]) -> subprocess.Popen[bytes]:
    """Start one worker process (it starts in well under a second; polling comes later)."""
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,  # "ready", then nothing: it logs on our stderr
        start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them
    )
    _children.add(child)
    return child


async def start_workers(
    count: int, address: str, floor_queue: str, networks: list[Network]
) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes serving the floor and every network; once all poll."""
    command = [
        sys.executable,
        str(WORKER_SCRIPT),
        address,
        floor_queue,
        *(f"{n.queue}={n.state}" for n in networks),
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            started.append(spawn_worker(command))
        for child in started:
            assert child.stdout is not None
            line = await asyncio.wait_for(
                asyncio.to_thread(child.stdout.readline), timeout=WORKER_READY_TIMEOUT
            )
            if line.strip() != b"ready":  # it closed its output: it is ending
                code = await asyncio.to_thread(child.wait)
                raise WorkerDiedError(
                    f"worker process {child.pid} ended (exit code {code}) before it was ready"
                )
    except BaseException:
        for child in started:
            stop_child(child)
        raise
    pids = " ".join(str(c.pid) for c in started)
    print(f"worker processes ready: {pids}", file=sys.stderr, flush=True)
    return started


#: How often the benchmark looks whether its worker processes are still there.
WORKER_WATCH_INTERVAL = 0.5


async def unless_a_worker_dies(
    children: list[subprocess.Popen[bytes]], work: Coroutine[Any, Any, T]
) -> T:
    """``work``'s result; but should a worker process end first, ``WorkerDiedError``
    (the round would otherwise wait forever for tasks nobody polls)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=WORKER_WATCH_INTERVAL)
        if done:
            return task.result()
        ended = [c for c in children if c.poll() is not None]
        if ended:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise WorkerDiedError(
                ", ".join(f"worker process {c.pid} ended (exit code {c.returncode})" for c in ended)
                + " before the round was over"
            )


@dataclass
class Cpu:
    """CPU seconds used so far by the workers and by the Temporal server."""

    worker: float
    server: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.worker - other.worker, self.server - other.server)


def read_cpu(server_pid: int, children: list[subprocess.Popen[bytes]]) -> Cpu:
    """The workers' CPU (the worker processes', or this process's when it is the worker)
    and the server's (its whole process group)."""
    worker = sum(cpu_seconds(c.pid) for c in children) if children else time.process_time()
    return Cpu(worker, group_cpu_seconds(server_pid))


@dataclass
class WorkerFigures:
    """One worker process of a round: its peak memory, its CPU, the activity tasks it ran."""

    pid: int
    peak_rss_mb: float
    cpu_seconds: float
    activity_tasks: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "peakRssMb": self.peak_rss_mb,
            "cpuSeconds": round(self.cpu_seconds, 2),
            "activityTasks": self.activity_tasks,
        }
