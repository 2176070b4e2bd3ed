"""`import meshfleet` is the documented, stable surface a script programs against."""

from __future__ import annotations

import inspect
import subprocess
import sys

import meshfleet
from engine.domain.errors import MeshfleetError
from engine.runtime.client import MeshfleetClient

#: The promise: removing a name from here is a breaking change.
SURFACE = {
    "client": {"MeshfleetClient", "UpdateRunHandle", "ConnectionSettings", "run_script"},
    "runs": {"RunSpec", "UpgradeType", "RunTimings", "RunSummary"},
    "strategies": {"UpdateStrategy", "load_strategy", "parse_strategy", "default_strategy"},
    "states": {
        "State",
        "GateKind",
        "GateState",
        "GateStatus",
        "RunStatus",
        "StageStatus",
        "GroupStatus",
        "MemberStatus",
        "MemberStep",
    },
    "networks": {
        "NetworkStatus",
        "NetworkDescription",
        "NetworkSummary",
        "NetworkMember",
        "JoinResult",
        "RemoveResult",
        "DeleteResult",
        "ServicesReport",
    },
    "schedules": {"AutoUpgradeProfile", "Channel", "FleetWindow", "ProfileStatus"},
    "errors": {
        "MeshfleetError",
        "InvalidInputError",
        "FieldError",
        "NotFoundError",
        "UnavailableError",
        "NetworkExistsError",
        "NetworkRequestError",
    },
}


def test_the_public_surface_is_exactly_the_documented_names() -> None:
    expected = set().union(*SURFACE.values()) | {"__version__"}
    assert set(meshfleet.__all__) == expected
    assert len(meshfleet.__all__) == len(set(meshfleet.__all__)), "a name is listed twice"


def test_every_public_name_is_importable_and_documented() -> None:
    for name in meshfleet.__all__:
        value = getattr(meshfleet, name)
        if name == "__version__":
            assert isinstance(value, str)
            assert value
            continue
        assert inspect.getdoc(value), f"meshfleet.{name} has no docstring"


def test_the_public_names_are_the_engine_objects_not_copies() -> None:
    assert meshfleet.MeshfleetClient is MeshfleetClient
    assert meshfleet.MeshfleetError is MeshfleetError


def test_the_errors_worth_catching_share_one_base() -> None:
    for name in SURFACE["errors"] - {"FieldError"}:
        assert issubclass(getattr(meshfleet, name), meshfleet.MeshfleetError), name


def test_the_client_methods_are_typed() -> None:
    for name, method in inspect.getmembers(MeshfleetClient, inspect.isfunction):
        if name.startswith("_"):
            continue
        signature = inspect.signature(method)
        assert signature.return_annotation is not inspect.Signature.empty, name
        for parameter in signature.parameters.values():
            if parameter.name not in ("self", "cls"):
                assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)


def test_star_import_gives_the_surface_in_a_fresh_interpreter() -> None:
    code = (
        "from meshfleet import *; import meshfleet; "
        "print(sorted(set(dir()) & set(meshfleet.__all__)) == sorted(meshfleet.__all__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"


def test_the_package_ships_a_typing_marker() -> None:
    from importlib import resources

    assert resources.files("meshfleet").joinpath("py.typed").is_file()
