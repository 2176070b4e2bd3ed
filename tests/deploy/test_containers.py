"""The production-like tier: the compose file's images, ``meshfleet setup``, and a worker image.

Needs a Docker engine and the ``containers`` extra (``pip install -e
'.[containers]'``). Where the engine is not reachable (CI, this project's
build machine) every test here is skipped with that reason; the embedded-server
tests cover the same code without it. It starts, from the images and scripts
of ``deploy/compose``: PostgreSQL, the schema one-shot, the Temporal server and
the namespace one-shot; runs ``meshfleet setup`` twice against the server
(adds four, then none); builds ``deploy/Dockerfile`` and runs a worker from it
on the simulated backend, sharing the world's directory with this process; and
runs a network and an update run of a simulated fleet end to end through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.domain.run import State
from engine.domain.runspec import RunSpec
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.devserver import SEARCH_ATTRIBUTES
from engine.runtime.runs import start_update_run
from strategies import parse_strategy
from tests.deploy.conftest import COMPOSE, REPO
from tests.deploy.test_compose import dotenv
from tests.polling import eventually_blocking
from tests.runs.harness import TIMINGS, Cluster, create_network, fleet_document, strategy
from tests.runtime.serverproc import MESHFLEET

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.containers]

TASK_QUEUE = "meshfleet"
NAMESPACE = "default"


def docker_engine_problem() -> str | None:
    """Why no Docker engine answers (None when one does): the daemon, not the client binary."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    url = urllib.parse.urlparse(host)
    try:
        if url.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect(url.path)
        elif url.scheme == "tcp":
            sock = socket.create_connection((url.hostname or "localhost", url.port or 2375), 2)
        else:
            return f"DOCKER_HOST={host} is not a unix or tcp address"
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(64)
    except OSError as error:
        return f"no Docker engine reachable at {host} ({error.strerror or error})"
    if b" 200 " not in answer.split(b"\r\n", 1)[0] + b" ":
        return f"the Docker engine at {host} does not answer /_ping"
    return None


_PROBLEM = docker_engine_problem()
if _PROBLEM is None:
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        _PROBLEM = "testcontainers is not installed (pip install -e '.[containers]')"
if _PROBLEM is not None:
    pytestmark = [pytest.mark.containers, pytest.mark.skip(reason=_PROBLEM)]


def _wait_exit(container: Any, timeout: float) -> None:
    result = container.get_wrapped_container().wait(timeout=timeout)
    logs = container.get_wrapped_container().logs().decode(errors="replace")[-3000:]
    assert result["StatusCode"] == 0, logs


def _wait_port(host: str, port: int, timeout: float) -> None:
    def listening() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((host, port)) == 0

    eventually_blocking(
        listening, timeout=timeout, interval=1, what=f"something to listen on {host}:{port}"
    )


class Stack:
    """The running containers and how to reach them from this process."""

    def __init__(self, address: str, state_dir: Path, image: str, network: Any) -> None:
        self.address = address
        self.state_dir = state_dir
        self.image = image
        self.network = network


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage
    from testcontainers.core.network import Network

    env = dotenv(COMPOSE / ".env")
    persistence = {
        "DB": "postgres12",
        "DB_PORT": "5432",
        "POSTGRES_SEEDS": "postgresql",
        "POSTGRES_USER": env["POSTGRES_USER"],
        "POSTGRES_PWD": env["POSTGRES_PASSWORD"],
    }
    scripts = str(COMPOSE / "scripts")
    admin_tools = f"temporalio/admin-tools:{env['TEMPORAL_ADMINTOOLS_VERSION']}"
    state_dir = tmp_path_factory.mktemp("shared-world")
    image_tag = "meshfleet:containers-test"
    with Network() as network:
        postgres = (
            DockerContainer(f"postgres:{env['POSTGRESQL_VERSION']}")
            .with_network(network)
            .with_network_aliases("postgresql")
            .with_env("POSTGRES_USER", env["POSTGRES_USER"])
            .with_env("POSTGRES_PASSWORD", env["POSTGRES_PASSWORD"])
        )
        with postgres:
            schema = (
                DockerContainer(admin_tools)
                .with_network(network)
                .with_volume_mapping(scripts, "/scripts", "ro")
                .with_kwargs(entrypoint=["/bin/sh", "/scripts/setup-postgres.sh"])
                .with_env("SQL_PASSWORD", env["POSTGRES_PASSWORD"])
            )
            for name, value in persistence.items():
                schema = schema.with_env(name, value)
            with schema:
                _wait_exit(schema, timeout=180)
            server = (
                DockerContainer(f"temporalio/server:{env['TEMPORAL_VERSION']}")
                .with_network(network)
                .with_network_aliases("temporal")
                .with_env("BIND_ON_IP", "0.0.0.0")
                .with_env(
                    "DYNAMIC_CONFIG_FILE_PATH", "/etc/temporal/config/dynamicconfig/meshfleet.yaml"
                )
                .with_volume_mapping(
                    str(COMPOSE / "dynamicconfig"), "/etc/temporal/config/dynamicconfig", "ro"
                )
                .with_exposed_ports(7233)
            )
            for name, value in persistence.items():
                server = server.with_env(name, value)
            with server:
                host = server.get_container_host_ip()
                port = int(server.get_exposed_port(7233))
                _wait_port(host, port, timeout=120)
                namespace = (
                    DockerContainer(admin_tools)
                    .with_network(network)
                    .with_volume_mapping(scripts, "/scripts", "ro")
                    .with_kwargs(entrypoint=["/bin/sh", "/scripts/create-namespace.sh"])
                    .with_env("TEMPORAL_ADDRESS", "temporal:7233")
                    .with_env("TEMPORAL_NAMESPACE", NAMESPACE)
                )
                with namespace:
                    _wait_exit(namespace, timeout=180)
                build = DockerImage(
                    path=str(REPO), dockerfile_path="deploy/Dockerfile", tag=image_tag
                )
                with build:
                    yield Stack(f"{host}:{port}", state_dir, image_tag, network)


def run_setup(address: str) -> dict[str, Any]:
    ran = subprocess.run(
        [MESHFLEET, "--address", address, "--namespace", NAMESPACE, "setup", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TEMPORAL_ADDRESS": "", "TEMPORAL_NAMESPACE": ""},
    )
    assert ran.returncode == 0, ran.stderr
    report: dict[str, Any] = json.loads(ran.stdout)
    return report


def test_setup_on_the_compose_server_adds_the_attributes_once(stack: Stack) -> None:
    """A real cluster on PostgreSQL starts without them: setup adds four, then none."""
    first = run_setup(stack.address)
    assert first["searchAttributes"]["added"] == list(SEARCH_ATTRIBUTES)
    second = run_setup(stack.address)
    assert second["searchAttributes"] == {
        "added": [],
        "kept": list(SEARCH_ATTRIBUTES),
        "missing": [],
    }


def test_a_worker_from_the_image_runs_a_simulated_update_end_to_end(stack: Stack) -> None:
    """Network join and a staged update run, executed by the containerized worker."""
    from testcontainers.core.container import DockerContainer

    run_setup(stack.address)
    clusters = [Cluster(f"c{i}") for i in range(1, 5)]
    backend = SimulatedFleetBackend(stack.state_dir)
    backend.load(parse_fleet(fleet_document(clusters)), reset=True)
    worker = (
        DockerContainer(stack.image)
        .with_network(stack.network)
        .with_command(["--health-port", "8080", "--backend", "simulated"])
        .with_env("TEMPORAL_ADDRESS", "temporal:7233")
        .with_env("TEMPORAL_NAMESPACE", NAMESPACE)
        .with_env("MESHFLEET_TASK_QUEUE", TASK_QUEUE)
        .with_env("MESHFLEET_POLL_INTERVAL", "100ms")
        .with_volume_mapping(str(stack.state_dir), "/var/lib/meshfleet", "rw")
        # As this process's user, so both sides can write the shared SQLite world.
        .with_kwargs(user=f"{os.getuid()}:{os.getgid()}")
        .with_exposed_ports(8080)
    )
    with worker:
        health = f"http://{worker.get_container_host_ip()}:{worker.get_exposed_port(8080)}/healthz"
        _wait_http(health, timeout=120)

        async def scenario() -> State:
            client = await connect_client(
                stack.address, ConnectionSettings(address=stack.address, namespace=NAMESPACE)
            )
            members = [c.name for c in clusters]
            await create_network(client, TASK_QUEUE, "containers", members)
            spec = RunSpec(
                network="containers",
                kubernetes_version="1.33",
                strategy=parse_strategy(strategy([{"name": "all", "groups": [{"name": "all"}]}])),
            )
            run = await start_update_run(client, TASK_QUEUE, spec, timings=TIMINGS)
            status = await asyncio.wait_for(run.result(), timeout=300)
            return status.state

        assert asyncio.run(scenario()) is State.COMPLETED
    upgraded = {name: c.kubernetes_version for name, c in backend.world().clusters.items()}
    assert all(version.startswith("1.33") for version in upgraded.values()), upgraded


def _wait_http(url: str, timeout: float) -> None:
    import urllib.request

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    eventually_blocking(answers, timeout=timeout, interval=1, what=f"{url} to answer 200")
