"""meshfleet's public Python API: the one stable entry point for scripts.

Everything a program needs to drive meshfleet is importable from here::

    import meshfleet

    client = await meshfleet.MeshfleetClient.connect()
    run = await client.start_update_run(
        meshfleet.RunSpec(
            network="prod-mesh",
            kubernetes_version="1.33",
            strategy=meshfleet.load_strategy(path),
        )
    )

The names in ``__all__`` are the supported surface: the client and its run
handle, run specs and strategies, the states and statuses a run reports,
networks and schedules, and the errors worth catching. Everything else
(``engine.*``, ``workflows``, ``activities``, ``strategies``) is internal and
may change between releases. This package only re-exports; it does no I/O of
its own.
"""

from __future__ import annotations

from importlib import metadata

from engine.domain.errors import (
    FieldError,
    InvalidInputError,
    MeshfleetError,
    NotFoundError,
    UnavailableError,
)
from engine.domain.network import (
    DeleteResult,
    JoinResult,
    NetworkDescription,
    NetworkExistsError,
    NetworkMember,
    NetworkRequestError,
    NetworkStatus,
    NetworkSummary,
    RemoveResult,
)
from engine.domain.run import (
    GateKind,
    GateState,
    GateStatus,
    GroupStatus,
    MemberStatus,
    MemberStep,
    RunStatus,
    RunTimings,
    StageStatus,
    State,
)
from engine.domain.runspec import RunSpec, UpgradeType
from engine.domain.schedule import AutoUpgradeProfile, Channel, FleetWindow, ProfileStatus
from engine.domain.services import ServicesReport
from engine.domain.strategy import UpdateStrategy
from engine.runtime.client import MeshfleetClient
from engine.runtime.connection import ConnectionSettings
from engine.runtime.process import run_script
from engine.runtime.runs import RunSummary, UpdateRunHandle
from strategies.formats import default_strategy, load_strategy, parse_strategy

try:
    __version__: str = metadata.version("meshfleet")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "AutoUpgradeProfile",
    "Channel",
    "ConnectionSettings",
    "DeleteResult",
    "FieldError",
    "FleetWindow",
    "GateKind",
    "GateState",
    "GateStatus",
    "GroupStatus",
    "InvalidInputError",
    "JoinResult",
    "MemberStatus",
    "MemberStep",
    "MeshfleetClient",
    "MeshfleetError",
    "NetworkDescription",
    "NetworkExistsError",
    "NetworkMember",
    "NetworkRequestError",
    "NetworkStatus",
    "NetworkSummary",
    "NotFoundError",
    "ProfileStatus",
    "RemoveResult",
    "RunSpec",
    "RunStatus",
    "RunSummary",
    "RunTimings",
    "ServicesReport",
    "StageStatus",
    "State",
    "UnavailableError",
    "UpdateRunHandle",
    "UpdateStrategy",
    "UpgradeType",
    "__version__",
    "default_strategy",
    "load_strategy",
    "parse_strategy",
    "run_script",
]
