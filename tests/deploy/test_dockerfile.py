"""deploy/Dockerfile: pinned base, non-root, the worker as entrypoint, health from the worker.

Read as text (no Docker engine here): the instructions are checked against the
CLI they run, so a renamed option fails here rather than in a container.
"""

from __future__ import annotations

import json
import re
import subprocess

from tests.deploy.conftest import DEPLOY, REPO
from tests.runtime.serverproc import MESHFLEET

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def only(name: str) -> str:
    (value,) = [rest for word, rest in instructions() if word == name]
    return value


def test_the_base_image_is_a_pinned_slim_python_311() -> None:
    (default,) = [rest for word, rest in instructions() if word == "ARG" and "PYTHON_IMAGE" in rest]
    image = default.partition("=")[2]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    assert all(
        rest.startswith("${PYTHON_IMAGE}") for word, rest in instructions() if word == "FROM"
    )


def test_it_runs_as_a_fixed_non_root_user() -> None:
    user = only("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) >= 1000


def test_the_entrypoint_is_the_worker_with_its_health_port() -> None:
    """ENTRYPOINT meshfleet worker; CMD's --health-port is the exposed and checked port."""
    assert json.loads(only("ENTRYPOINT")) == ["meshfleet", "worker"]
    command = json.loads(only("CMD"))
    port = command[command.index("--health-port") + 1]
    assert only("EXPOSE") == port
    assert f"MESHFLEET_HEALTH_PORT={port}" in DOCKERFILE.read_text()
    healthcheck = only("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "MESHFLEET_HEALTH_PORT" in healthcheck
    # The options exist on the real CLI (the lead's worker command).
    help_text = subprocess.run(
        [MESHFLEET, "worker", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (*[c for c in command if c.startswith("--")], "--backend", "--access"):
        assert option in help_text


def test_everything_copied_exists_and_the_ignore_file_lets_it_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded from the context"
    # Every package setuptools installs is copied.
    assert {"engine", "workflows", "activities", "strategies"} <= allowed
