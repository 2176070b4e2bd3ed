"""Update runs from the client's side: starting one, and a handle to watch and steer it."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from engine.domain import run as contract
from engine.domain import search_attributes
from engine.domain.errors import (
    FieldError,
    InvalidInputError,
    MeshfleetError,
    NotFoundError,
    UnavailableError,
)
from engine.domain.failures import failure_text
from engine.domain.names import resource_name_problem
from engine.domain.network import QUERY_DESCRIBE, NetworkDescription, network_workflow_id
from engine.domain.run import (
    ApproveRequest,
    ResumeRequest,
    RetryRequest,
    RunStatus,
    RunTimings,
    SkipRequest,
    SkipTarget,
    SkipTargetType,
    State,
    StopRequest,
    UpdateRunInput,
)
from engine.domain.runspec import RunSpec, UpgradeType
from strategies import load_catalog

T = TypeVar("T")

log = structlog.get_logger(__name__)

NETWORK_KEY = search_attributes.NETWORK
STATE_KEY = search_attributes.RUN_STATE
STAGE_KEY = search_attributes.STAGE
TARGET_KEY = search_attributes.TARGET_VERSION
MEMBER_KEY = search_attributes.MEMBER
#: How long ``run start`` waits for the network to say its members (no worker: skip).
MEMBERS_QUERY_TIMEOUT = dt.timedelta(seconds=10)
#: How often watch() and result() look at the run.
WATCH_INTERVAL = dt.timedelta(seconds=0.5)


class ControlRejectedError(MeshfleetError):
    """The run refused a control (its validator said why); nothing was recorded."""

    exit_code = 2


def default_identity() -> str:
    """Who is asking: ``user@host``, recorded with every control."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def new_run_name(now: dt.datetime | None = None) -> str:
    """A readable, unique run name: ``run-20261126-0517-3f9a``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"run-{now:%Y%m%d-%H%M}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunSummary:
    """One run as listed (from the Web UI's search attributes)."""

    network: str
    name: str
    state: str | None
    stage: str | None
    target: str | None
    started: dt.datetime | None

    @property
    def ref(self) -> str:
        """``network/run``: what the CLI takes to name a run."""
        return f"{self.network}/{self.name}"


class UpdateRunHandle:
    """A started run: read it, steer it, wait for it."""

    def __init__(self, client: Client, network: str, name: str) -> None:
        self.network = network
        self.name = name
        self.workflow_id = contract.run_workflow_id(network, name)
        self._handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(self.workflow_id)

    @property
    def ref(self) -> str:
        return f"{self.network}/{self.name}"

    async def status(self) -> RunStatus:
        """The run's status tree right now."""
        try:
            status: RunStatus = await _across_continue_as_new(
                lambda: self._handle.query(contract.STATUS, result_type=RunStatus)
            )
        except RPCError as error:
            raise _rpc_problem(error, f"run {self.ref}") from None
        return status

    async def approve(
        self, gate: str, comment: str | None = None, *, identity: str | None = None
    ) -> RunStatus:
        """Approve a waiting gate (by id, or by display name when unique)."""
        return await self._control(
            contract.APPROVE,
            ApproveRequest(gate=gate, comment=comment, identity=identity or default_identity()),
        )

    async def stop(self, reason: str, *, identity: str | None = None) -> RunStatus:
        """Start nothing new; members in flight finish; the run ends Stopped."""
        return await self._control(
            contract.STOP, StopRequest(reason=reason, identity=identity or default_identity())
        )

    async def resume(self, reason: str | None = None, *, identity: str | None = None) -> RunStatus:
        """Continue a Stopped or Failed run where it left off (failed members are tried again)."""
        return await self._control(
            contract.RESUME, ResumeRequest(reason=reason, identity=identity or default_identity())
        )

    async def skip(
        self,
        targets: Sequence[tuple[SkipTargetType, str]],
        reason: str | None = None,
        *,
        identity: str | None = None,
    ) -> RunStatus:
        """Skip members, groups, stages or after-stage waits."""
        return await self._control(
            contract.SKIP,
            SkipRequest(
                targets=[SkipTarget(type=kind, name=name) for kind, name in targets],
                reason=reason,
                identity=identity or default_identity(),
            ),
        )

    async def retry(
        self, members: Sequence[str] = (), reason: str | None = None, *, identity: str | None = None
    ) -> RunStatus:
        """Upgrade failed members again with the same settings (all failed ones by default)."""
        return await self._control(
            contract.RETRY,
            RetryRequest(
                members=list(members), reason=reason, identity=identity or default_identity()
            ),
        )

    async def watch(self, interval: dt.timedelta = WATCH_INTERVAL) -> AsyncIterator[RunStatus]:
        """Every change of the status, until the run has finished (the last one included)."""
        last: str | None = None
        while True:
            status = await self.status()
            encoded = status.model_dump_json()
            if encoded != last:
                last = encoded
                yield status
            if status.state.finished and status.state is not State.NOT_STARTED:
                return
            await asyncio.sleep(interval.total_seconds())

    async def result(self, interval: dt.timedelta = WATCH_INTERVAL) -> RunStatus:
        """Wait until the run has finished (Completed, Failed or Stopped) and return its status."""
        final: RunStatus | None = None
        async for status in self.watch(interval):
            final = status
        assert final is not None
        return final

    async def _control(self, name: str, request: contract.Control) -> RunStatus:
        try:
            status: RunStatus = await _across_continue_as_new(
                lambda: self._handle.execute_update(name, request, result_type=RunStatus)
            )
        except WorkflowUpdateFailedError as error:
            raise ControlRejectedError(f"{name} rejected: {failure_text(error)}") from None
        except RPCError as error:
            raise _rpc_problem(error, f"run {self.ref}") from None
        return status


#: A run that just continued as new answers nothing until its first workflow task runs.
_NOT_YET_SCHEDULED = "Workflow task is not scheduled yet"
_ACROSS_CAN_TRIES = 50


async def _across_continue_as_new(call: Callable[[], Awaitable[T]]) -> T:
    """``call``, asked again while the run's new execution has not run its first task.

    Between a continue-as-new and the new run's first workflow task the server refuses
    queries and updates with FAILED_PRECONDITION; that moment passes by itself.
    """
    for _ in range(_ACROSS_CAN_TRIES - 1):
        try:
            return await call()
        except RPCError as error:
            transient = (
                error.status is RPCStatusCode.FAILED_PRECONDITION
                and _NOT_YET_SCHEDULED in error.message
            )
            if not transient:
                raise
        await asyncio.sleep(0.1)
    return await call()


async def start_update_run(
    client: Client,
    task_queue: str,
    spec: RunSpec,
    *,
    timings: RunTimings | None = None,
    catalog_file: Path | None = None,
) -> UpdateRunHandle:
    """Validate ``spec``, snapshot the strategy and catalog into the run, and start it."""
    if spec.strategy_ref is not None:
        raise InvalidInputError(
            [
                FieldError(
                    path="strategyRef",
                    message="meshfleet keeps no strategy store yet; give the strategy inline "
                    "(meshfleet run start --strategy FILE)",
                )
            ]
        )
    if spec.upgrade_type is UpgradeType.NODE_IMAGE_ONLY:
        raise InvalidInputError(
            [
                FieldError(
                    path="upgradeType",
                    message="NodeImageOnly is not supported by meshfleet's backends yet",
                )
            ]
        )
    name = spec.name or new_run_name()
    problem = resource_name_problem(name)
    if problem:
        raise InvalidInputError([FieldError(path="name", message=problem)])
    members = await _require_network(client, spec.network)
    catalog = load_catalog(catalog_file)
    request = UpdateRunInput(
        run_id=name,
        spec=spec.model_copy(update={"name": name}),
        catalog=catalog.to_json_dict(),
        timings=timings or RunTimings(),
    )
    target = spec.kubernetes_version or ""
    try:
        await client.start_workflow(
            contract.UPDATE_RUN_WORKFLOW,
            arg=request,
            id=contract.run_workflow_id(spec.network, name),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(NETWORK_KEY, spec.network),
                    SearchAttributePair(STATE_KEY, State.NOT_STARTED.value),
                    SearchAttributePair(TARGET_KEY, target),
                    *([SearchAttributePair(MEMBER_KEY, members)] if members else []),
                ]
            ),
            static_summary=f"update run {name}: network {spec.network} to Kubernetes {target}",
            static_details=(
                f"strategy: {spec.strategy.metadata.name if spec.strategy else 'one by one'}; "
                f"upgrade type: {spec.upgrade_type.value}"
            ),
        )
    except WorkflowAlreadyStartedError:
        raise InvalidInputError(
            [FieldError(path="name", message=f"a run {spec.network}/{name} already exists")]
        ) from None
    except RPCError as error:
        raise _rpc_problem(error, f"run {spec.network}/{name}") from None
    return UpdateRunHandle(client, spec.network, name)


async def list_runs(
    client: Client, network: str | None = None, state: State | None = None, limit: int = 200
) -> list[RunSummary]:
    """Runs, newest first, filtered through the search attributes."""
    query = f'WorkflowType = "{contract.UPDATE_RUN_WORKFLOW}"'
    if network:
        query += f' AND MeshfleetNetwork = "{_quoted(network)}"'
    if state:
        query += f' AND MeshfleetRunState = "{state.value}"'
    found: list[RunSummary] = []
    async for execution in client.list_workflows(query, limit=limit):
        attributes = execution.typed_search_attributes
        parts = execution.id.split("/")
        if len(parts) != 3:
            continue
        found.append(
            RunSummary(
                network=parts[1],
                name=parts[2],
                state=attributes.get(STATE_KEY),
                stage=attributes.get(STAGE_KEY),
                target=attributes.get(TARGET_KEY),
                started=execution.start_time,
            )
        )
    return found


async def find_run(client: Client, ref: str, network: str | None = None) -> UpdateRunHandle:
    """A run by ``network/run``, by ``run`` with ``network``, or by a unique ``run`` name."""
    if "/" in ref:
        network, _, name = ref.partition("/")
    elif network:
        name = ref
    else:
        matches = [r for r in await list_runs(client) if r.name == ref]
        if not matches:
            raise NotFoundError(f"no update run named {ref!r}")
        if len(matches) > 1:
            networks = ", ".join(sorted({m.network for m in matches}))
            raise InvalidInputError(
                [
                    FieldError(
                        path="run",
                        message=f"{ref!r} names runs in several networks ({networks}); "
                        "write NETWORK/RUN",
                    )
                ]
            )
        network, name = matches[0].network, matches[0].name
    handle = UpdateRunHandle(client, network, name)
    try:
        await handle._handle.describe()
    except RPCError as error:
        raise _rpc_problem(error, f"run {network}/{name}") from None
    return handle


async def _require_network(client: Client, network: str) -> list[str]:
    """The network exists and has members to update (else: a field error, nothing starts).

    Its member names, for the run's ``MeshfleetMember``; none when no worker answers now
    (the run itself then refuses an empty network, and starts unlabelled).
    """
    handle = client.get_workflow_handle(network_workflow_id(network))
    try:
        await handle.describe()
    except RPCError as error:
        raise _rpc_problem(error, f"network {network!r}") from None
    try:
        described: NetworkDescription = await handle.query(
            QUERY_DESCRIBE, result_type=NetworkDescription, rpc_timeout=MEMBERS_QUERY_TIMEOUT
        )
    except RPCError as error:
        if error.status is not RPCStatusCode.DEADLINE_EXCEEDED:
            raise _rpc_problem(error, f"network {network!r}") from None
        log.warning("run.members_unknown", network=network, error=str(error))
        return []
    if not described.members:
        raise InvalidInputError(
            [
                FieldError(
                    path="network",
                    message=f"network {network!r} has no members: there is nothing to update "
                    f"(join members first: meshfleet network join {network} CLUSTER...)",
                )
            ]
        )
    return sorted(member.name for member in described.members)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _rpc_problem(error: RPCError, what: str) -> MeshfleetError:
    if error.status is RPCStatusCode.NOT_FOUND:
        return NotFoundError(f"{what} does not exist")
    return UnavailableError(f"{what}: Temporal answered {error.status.name}: {error.message}")
