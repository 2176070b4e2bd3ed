"""The lock files: every range in pyproject.toml is pinned, with hashes, consistently."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def check_lock() -> ModuleType:
    """The CI script `.ci/check_lock.py`, loaded as a module."""
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / ".ci" / "check_lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_requirements(*extras: str) -> list[Requirement]:
    """pyproject.toml's dependencies plus those of the named extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def all_pins(lock: Path) -> dict[str, str]:
    """Every `name==version` line of a lock file, whatever its marker."""
    pattern = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pattern.findall(lock.read_text())}


def test_every_dev_requirement_is_pinned_inside_its_range() -> None:
    pins = all_pins(ROOT / "requirements-dev.lock")
    for requirement in project_requirements("dev"):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements-dev.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement.specifier}: run make lock"
        )


def test_every_runtime_requirement_is_pinned_inside_its_range() -> None:
    pins = all_pins(ROOT / "requirements.lock")
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True)


def test_the_runtime_lock_pins_the_same_versions_as_the_dev_lock() -> None:
    runtime = all_pins(ROOT / "requirements.lock")
    dev = all_pins(ROOT / "requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_every_pin_carries_a_hash() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
        pinned = [entry for entry in entries if "==" in entry.split("\n", 1)[0]]
        assert pinned
        for entry in pinned:
            assert "--hash=sha256:" in entry, f"{lock}: {entry.splitlines()[0]} has no hash"


def test_the_lock_check_names_each_difference_from_the_venv() -> None:
    module = check_lock()
    problems = module.differences(
        {"structlog": "26.1.0", "rich": "15.0.0", "typer": "0.29.2"},
        {"structlog": "26.1.0", "rich": "14.0.0", "extra-thing": "1.0"},
    )
    assert problems == [
        "extra-thing: installed 1.0, not in the lock",
        "rich: locked 15.0.0, installed 14.0.0",
        "typer: locked 0.29.2, not installed",
    ]


def test_the_lock_check_skips_pins_whose_marker_does_not_apply(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "colorama==0.4.6 ; sys_platform == 'nonexistent-os' \\\n    --hash=sha256:00\n"
        "rich==15.0.0 \\\n    --hash=sha256:11\n"
    )
    assert check_lock().locked(lock) == {"rich": "15.0.0"}


def test_the_image_installs_the_locked_versions_and_the_public_package() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    assert "COPY meshfleet ./meshfleet" in dockerfile
