"""deploy/compose: the file parses, every image is pinned, and the stack is wired as documented.

Variables are interpolated from ``.env`` the way Compose does (``${VAR}``,
``${VAR:-default}``, ``$$`` for a literal dollar), so the checks see the
values ``docker compose up`` would use.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.runtime.devserver import DEFAULT_GRPC_PORT
from tests.deploy.conftest import COMPOSE, REPO
from tests.deploy.test_kubernetes import project_version

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_]\w*)")


def dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path}: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        if name not in env and match.group(2) is None:
            raise AssertionError(f"${{{name}}} is not set in .env and has no default")
        return env.get(name) or match.group(2) or ""

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return dotenv(COMPOSE / ".env")


@pytest.fixture(scope="module")
def compose(env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert isinstance(raw, dict)
    return dict(interpolate(raw, env))


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def test_every_image_has_a_pinned_version(compose: dict[str, Any]) -> None:
    """No ``latest``, no bare name: every tag is a version with at least a minor number."""
    for name, service in services(compose).items():
        image = service["image"]
        repository, sep, tag = image.rpartition(":")
        assert sep, f"{name}: image {image!r} has no tag"
        assert "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?([.-][\w.-]+)?", tag), f"{name}: tag {tag!r}"
        assert repository


def test_the_official_temporal_images_move_together(compose: dict[str, Any]) -> None:
    """Server and admin tools share a version (the schema tool must match the server)."""
    images = {s["image"].rpartition(":")[0]: s["image"] for s in services(compose).values()}
    assert {"temporalio/server", "temporalio/admin-tools", "temporalio/ui", "postgres"} <= set(
        images
    )
    server = images["temporalio/server"].rpartition(":")[2]
    assert images["temporalio/admin-tools"].rpartition(":")[2] == server


def test_meshfleets_image_is_the_projects_version_built_from_the_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name, service in services(compose).items():
        if not name.startswith("meshfleet"):
            continue
        assert service["image"] == f"meshfleet:{project_version()}"
        build = service["build"]
        context = (COMPOSE / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).is_file()


def test_only_the_frontend_the_web_ui_and_prometheus_are_published_and_on_loopback(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    published = {
        name: service["ports"] for name, service in services(compose).items() if "ports" in service
    }
    assert published == {
        "temporal": [f"127.0.0.1:{env['TEMPORAL_PORT']}:{DEFAULT_GRPC_PORT}"],
        "temporal-ui": [f"127.0.0.1:{env['TEMPORAL_UI_PORT']}:8080"],
        "prometheus": [f"127.0.0.1:{env['PROMETHEUS_PORT']}:9090"],
    }


def test_start_order_runs_schema_namespace_and_setup_before_the_workers(
    compose: dict[str, Any],
) -> None:
    """Every dependency exists, one-shots are awaited to completion, the chain is as documented."""
    all_services = services(compose)
    for name, service in all_services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            assert condition["condition"] in (
                "service_healthy",
                "service_completed_successfully",
            )

    def after(name: str) -> str:
        (dependency,) = all_services[name]["depends_on"]
        return str(dependency)

    assert after("meshfleet-worker") == "meshfleet-setup"
    assert after("meshfleet-setup") == "temporal-namespace"
    assert after("temporal-namespace") == "temporal"
    assert after("temporal") == "temporal-schema"
    assert after("temporal-schema") == "postgresql"
    assert all_services["meshfleet-setup"]["entrypoint"] == ["meshfleet", "setup"]


def test_workers_share_the_simulated_world_on_a_named_volume(compose: dict[str, Any]) -> None:
    """Every meshfleet container mounts the same named volume at $MESHFLEET_STATE_DIR."""
    volumes = set(compose["volumes"])
    state_dirs = set()
    for name, service in services(compose).items():
        for mount in service.get("volumes", []):
            source, _, _target = mount.partition(":")
            if not source.startswith("."):
                assert source in volumes, f"{name}: {source} is not a named volume"
        if name.startswith("meshfleet"):
            state_dir = service["environment"]["MESHFLEET_STATE_DIR"]
            assert f"meshfleet-state:{state_dir}" in service["volumes"]
            state_dirs.add(state_dir)
    assert len(state_dirs) == 1
    worker = services(compose)["meshfleet-worker"]
    assert worker["command"][worker["command"].index("--backend") + 1] == "simulated"
    assert int(worker["deploy"]["replicas"]) >= 2
    assert worker["environment"]["TEMPORAL_ADDRESS"] == f"temporal:{DEFAULT_GRPC_PORT}"


def test_mounted_files_exist_and_scripts_are_valid_shell(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source} does not exist"
    for script in (COMPOSE / "scripts").glob("*.sh"):
        subprocess.run(["sh", "-n", str(script)], check=True)
    temporal = services(compose)["temporal"]
    dynamic = Path(temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"])
    mount = next(m for m in temporal["volumes"] if m.split(":")[1] == str(dynamic.parent))
    config = yaml.safe_load((COMPOSE / mount.split(":")[0] / dynamic.name).read_text())
    assert config["frontend.enableUpdateWorkflowExecution"] == [{"value": True}]
