"""The README's CLI walkthrough finishes: its commands, run in order, in under three minutes.

The test reads the ``sh`` block under "### Walkthrough" and runs each line as a
reader would, from the repository's root, with ``meshfleet`` processes: the
server (on free ports instead of 7233/8233, since other servers may run here)
and the worker in the background, the rest one after the other. Each command
must exit 0. The healthcheck is repeated until the worker has polled, as a
reader who starts the worker a moment before would.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

from engine.runtime import devserver
from tests.polling import eventually_blocking
from tests.runtime.serverproc import MESHFLEET, wait_gone

REPO = Path(__file__).resolve().parents[2]
BUDGET_SECONDS = 180


def walkthrough_lines() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    after = text.split("### Walkthrough", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match, "no sh block under '### Walkthrough'"
    return [shlex.split(line, comments=True) for line in match.group(1).splitlines()]


def wait_for_port(port: int, deadline: float) -> None:
    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    eventually_blocking(
        listening,
        timeout=max(0.0, deadline - time.monotonic()),
        interval=0.2,
        what=f"something to listen on port {port}",
    )


def test_the_readme_walkthrough_runs_to_a_completed_run_in_under_three_minutes(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    deadline = started + BUDGET_SECONDS
    grpc, ui = devserver.free_port(), devserver.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "MESHFLEET_"))}
    env.update(
        {
            "MESHFLEET_STATE_DIR": str(tmp_path / "state"),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{grpc}",
            "COLUMNS": "200",
        }
    )
    background: list[subprocess.Popen[bytes]] = []
    transcript: list[str] = []
    try:
        for words in walkthrough_lines():
            if not words:
                continue
            assert words[0] == "meshfleet", words
            command = [MESHFLEET, *words[1:]]
            if command[-1] == "&":
                command = command[:-1]
                if command[1] == "server":
                    command += ["--port", str(grpc), "--ui-port", str(ui)]
                background.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                if command[1] == "server":
                    wait_for_port(grpc, deadline)
                continue
            while True:
                left = max(1.0, deadline - time.monotonic())
                ran = subprocess.run(
                    command, cwd=REPO, env=env, capture_output=True, text=True, timeout=left
                )
                transcript.append(f"$ {shlex.join(words)}\n{ran.stdout}{ran.stderr}")
                healthcheck_too_soon = words[1] == "healthcheck" and "no worker" in ran.stderr
                if not healthcheck_too_soon or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert ran.returncode == 0, "\n".join(transcript)
    finally:
        for process in reversed(background):
            process.send_signal(signal.SIGINT)
        for process in reversed(background):
            if not wait_gone(process.pid, timeout=20):
                process.kill()
            process.wait(timeout=10)
    took = time.monotonic() - started
    final = transcript[-2]  # the last watch; the status follows it
    assert "run demo-mesh/first: Completed, 4 completed, 1 skipped of 5 members" in final, final
    status = transcript[-1]
    assert "change freeze" in status
    assert "dashboards green" in status
    assert took < BUDGET_SECONDS, took
