"""Helpers for tests that run ``meshfleet server`` (or a server-owning script) as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.polling import eventually_blocking

MESHFLEET = str(Path(sys.executable).parent / "meshfleet")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    """Wait until ``pid`` has exited; True when it has."""
    try:
        eventually_blocking(
            lambda: not process_alive(pid), timeout=timeout, interval=0.1, what=f"{pid} to exit"
        )
    except AssertionError:
        return False
    return True


class ServerProcess:
    """``meshfleet --output json server ...`` in a subprocess, with its ready-line parsed."""

    def __init__(self, state_dir: Path, grpc: int, ui: int) -> None:
        env = {**os.environ, "MESHFLEET_STATE_DIR": str(state_dir)}
        self.process = subprocess.Popen(
            [MESHFLEET, "--output", "json", "server", "--port", str(grpc), "--ui-port", str(ui)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.info = self._read_info()
        record = json.loads((state_dir / "temporal-server.json").read_text())
        self.server_pid = int(record["pid"])

    def _read_info(self) -> dict[str, object]:
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                break
        if not lines:
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"meshfleet server printed nothing; stderr: {err}")
        info: dict[str, object] = json.loads("".join(lines))
        return info

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT, and wait for the command to end."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if process_alive(self.server_pid):
            os.kill(self.server_pid, signal.SIGKILL)
