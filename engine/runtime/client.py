"""The Python client: everything the CLI can do, for programs.

```python
from engine.runtime.client import MeshfleetClient

client = await MeshfleetClient.connect()            # embedded server unless TEMPORAL_ADDRESS is set
await client.create_network("prod-mesh", members=["eu-west-1", "eu-west-2"])
```

Methods validate their input before anything reaches Temporal and raise
``engine.domain.errors`` exceptions (``InvalidInputError``, ``NotFoundError``,
``UnavailableError``) with messages meant for a person.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from engine.domain import search_attributes
from engine.domain.errors import MeshfleetError, NotFoundError, UnavailableError
from engine.domain.membership import member_list_problems
from engine.domain.model import DomainModel
from engine.domain.network import (
    NETWORK_SEARCH_ATTRIBUTE,
    NETWORK_WORKFLOW,
    QUERY_DESCRIBE,
    UPDATE_CLEAR_DRAINED,
    UPDATE_DELETE,
    UPDATE_JOIN,
    UPDATE_OPERATION,
    UPDATE_OPERATOR_RELEASE,
    UPDATE_REMOVE,
    UPDATE_SERVICES,
    DeleteResult,
    JoinResult,
    NetworkDescription,
    NetworkExistsError,
    NetworkInput,
    NetworkRequestError,
    NetworkSettings,
    NetworkSummary,
    OperationResult,
    RemoveResult,
    network_name_problem,
    network_workflow_id,
)
from engine.domain.network_requests import (
    ClearDrainedRequest,
    DeleteRequest,
    JoinRequest,
    OperationRequest,
    OperatorReleaseRequest,
    RemoveRequest,
    ServicesRequest,
)
from engine.domain.run import RunTimings, State
from engine.domain.runspec import RunSpec
from engine.domain.schedule import AutoUpgradeProfile, ProfileStatus
from engine.domain.services import ServicesReport
from engine.runtime import runs, schedules
from engine.runtime import settings as runtime_settings
from engine.runtime.connection import Connection, ConnectionSettings, connect
from engine.runtime.runs import UpdateRunHandle
from engine.runtime.settings import task_queue as default_task_queue

T = TypeVar("T")

NETWORK_KEY = search_attributes.NETWORK
#: ``list_networks`` asks each network for its status; one that does not answer
#: within this (no worker running) is listed without it.
LIST_QUERY_TIMEOUT = timedelta(seconds=5)


def default_network_settings() -> NetworkSettings:
    """A new network's settings, from the runtime settings (environment)."""
    return NetworkSettings(
        mesh_ready_timeout=runtime_settings.mesh_ready_timeout(),
        degraded_recheck_interval=runtime_settings.degraded_recheck_interval(),
    )


def _check_network_name(name: str) -> None:
    problem = network_name_problem(name)
    if problem:
        raise NetworkRequestError(problem)


def _check_members(members: Sequence[str]) -> None:
    problems = member_list_problems(members)
    if problems:
        raise NetworkRequestError("; ".join(problems))


def _network_error(name: str, error: BaseException) -> MeshfleetError:
    """Temporal's errors about a network, as one sentence for a person."""
    if isinstance(error, MeshfleetError):
        return error
    if isinstance(error, WorkflowUpdateFailedError):
        cause = error.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        return NetworkRequestError(message)
    if isinstance(error, RPCError):
        if error.status is RPCStatusCode.NOT_FOUND:
            return NotFoundError(f"network {name!r} does not exist")
        if error.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return UnavailableError(f"Temporal is unavailable: {error.message}")
        return UnavailableError(f"Temporal refused the request: {error.message}")
    return MeshfleetError(f"{type(error).__name__}: {error}")


def run_script(main: Coroutine[Any, Any, object]) -> NoReturn:
    """``asyncio.run(main)`` for scripts, then exit without interpreter teardown.

    Use it instead of ``asyncio.run`` in short programs that use the client: the
    Temporal SDK's native threads can abort a process during CPython's final
    teardown (temporalio/sdk-python#300, "PyGILState_Release: thread state must
    be current"). Exit handlers still run; the exit code is 0, or 1 with the
    error printed when ``main`` raises.
    """
    import traceback

    from engine.runtime.cli.common import exit_now

    try:
        asyncio.run(main)
    except SystemExit as done:
        code = done.code
        exit_now(code if isinstance(code, int) else (0 if code is None else 1))
    except BaseException:
        traceback.print_exc()
        exit_now(1)
    exit_now(0)


class MeshfleetClient:
    """A connection to Temporal plus meshfleet's operations on networks and update runs."""

    def __init__(
        self,
        temporal: Client,
        *,
        task_queue: str | None = None,
        connection: Connection | None = None,
    ) -> None:
        self.temporal = temporal
        self.task_queue = task_queue or default_task_queue()
        self._connection = connection

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        *,
        task_queue: str | None = None,
        state_dir: Path | None = None,
    ) -> MeshfleetClient:
        """Connect the standard Temporal way (flags, then environment, then profile)."""
        connection = await connect(
            ConnectionSettings.resolve(address, namespace), state_dir=state_dir
        )
        return cls(connection.client, task_queue=task_queue, connection=connection)

    @property
    def ui_url(self) -> str | None:
        """The Web UI's base address, when known."""
        return self._connection.ui_url if self._connection else None

    def close(self) -> None:
        """Stop the embedded server if this client started it."""
        if self._connection is not None:
            self._connection.close()

    # --- networks (engine/runtime/client.py, section owned by the network lifecycle) ---

    async def create_network(
        self,
        name: str,
        members: Sequence[str] = (),
        *,
        settings: NetworkSettings | None = None,
    ) -> JoinResult | None:
        """Start the network's workflow and join ``members`` through the same join path.

        Returns the initial join's result (None when created empty). Raises
        :class:`NetworkExistsError` when a network of that name is running.
        """
        _check_network_name(name)
        if members:
            _check_members(members)
        network_input = NetworkInput(name=name, settings=settings or default_network_settings())
        options: dict[str, Any] = {
            "id": network_workflow_id(name),
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
            "search_attributes": TypedSearchAttributes([SearchAttributePair(NETWORK_KEY, name)]),
            "static_summary": f"Cross-cluster network {name}",
            "static_details": (
                f"Network **{name}**: a Cilium ClusterMesh of up to 255 clusters. "
                "Membership changes run here as updates (join, remove, delete); "
                "update runs take it with acquire and give it back with release."
            ),
        }
        if not members:
            try:
                await self.temporal.start_workflow(NETWORK_WORKFLOW, network_input, **options)
            except WorkflowAlreadyStartedError:
                raise NetworkExistsError(name) from None
            except Exception as error:
                raise _network_error(name, error) from None
            return None
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            NETWORK_WORKFLOW, network_input, **options
        )
        try:
            result: JoinResult = await self.temporal.execute_update_with_start_workflow(
                UPDATE_JOIN,
                JoinRequest(members=list(members)),
                start_workflow_operation=start,
                result_type=OperationResult,
            )
        except WorkflowAlreadyStartedError:
            with contextlib.suppress(Exception):  # the start's own copy of the same error
                await start.workflow_handle()
            raise NetworkExistsError(name) from None
        except Exception as error:
            raise _network_error(name, error) from None
        return result

    async def join(self, name: str, members: Sequence[str]) -> JoinResult:
        """Join clusters; per member: joined, rejected (with the rule), failed, or queued."""
        _check_network_name(name)
        _check_members(members)
        result: JoinResult = await self._network_update(
            name, UPDATE_JOIN, JoinRequest(members=list(members)), OperationResult
        )
        return await self._followed(name, result)

    async def remove(self, name: str, members: Sequence[str]) -> RemoveResult:
        """Remove members (drained first, then disconnected); queued while a run holds it."""
        _check_network_name(name)
        _check_members(members)
        result: RemoveResult = await self._network_update(
            name, UPDATE_REMOVE, RemoveRequest(members=list(members)), OperationResult
        )
        return await self._followed(name, result)

    async def delete_network(self, name: str, *, force: bool = False) -> DeleteResult:
        """Delete an empty network (or, with ``force``, remove every member first)."""
        _check_network_name(name)
        result: DeleteResult = await self._network_update(
            name, UPDATE_DELETE, DeleteRequest(force=force), OperationResult
        )
        return await self._followed(name, result)

    async def describe_network(self, name: str) -> NetworkDescription:
        """Members, ids, status, holder, pending operations and the recent log."""
        _check_network_name(name)
        handle = await self._running_network(name)
        try:
            described: NetworkDescription = await handle.query(
                QUERY_DESCRIBE, result_type=NetworkDescription
            )
        except Exception as error:
            raise _network_error(name, error) from None
        return described

    async def list_networks(self) -> list[NetworkSummary]:
        """Every running network, found by its search attribute, with its status."""
        query = (
            f'WorkflowType = "{NETWORK_WORKFLOW}" AND ExecutionStatus = "Running" '
            f"AND {NETWORK_SEARCH_ATTRIBUTE} IS NOT NULL"
        )
        found: list[NetworkSummary] = []
        try:
            async for execution in self.temporal.list_workflows(query):
                name = execution.typed_search_attributes.get(NETWORK_KEY)
                if name is None:
                    continue
                found.append(NetworkSummary(name=name, started_at=execution.start_time))
        except RPCError as error:
            raise _network_error("", error) from None

        async def status(summary: NetworkSummary) -> NetworkSummary:
            handle = self.temporal.get_workflow_handle(network_workflow_id(summary.name))
            try:
                described: NetworkDescription = await handle.query(
                    QUERY_DESCRIBE, result_type=NetworkDescription, rpc_timeout=LIST_QUERY_TIMEOUT
                )
            except Exception:  # a network no worker answers for is still listed
                return summary
            return summary.model_copy(
                update={
                    "status": described.status,
                    "members": len(described.members),
                    "holder": described.holder,
                    "pending": len(described.pending),
                }
            )

        summaries = await asyncio.gather(*(status(s) for s in found))
        return sorted(summaries, key=lambda s: s.name)

    async def network_services(self, name: str) -> ServicesReport:
        """Every global service of the members, with endpoints per cluster and flagged mistakes."""
        _check_network_name(name)
        report: ServicesReport = await self._network_update(
            name, UPDATE_SERVICES, ServicesRequest(), ServicesReport
        )
        return report

    async def release_network(
        self, name: str, reason: str, *, identity: str | None = None
    ) -> NetworkDescription:
        """Free a network whose holding update run is gone (refused while that run runs).

        The escape hatch for holds that no execution watches (taken by earlier
        code) or whose run cannot release; recorded in the network's log with
        ``identity`` (``user@host`` by default) and ``reason``.
        """
        _check_network_name(name)
        who = (identity if identity is not None else runs.default_identity()).strip()
        problems = []
        if not reason.strip():
            problems.append("reason: say why the network is released (it is recorded)")
        elif len(reason) > 1000:
            problems.append("reason: at most 1000 characters")
        if not who:
            problems.append("by: name who releases the network (it is recorded)")
        elif len(who) > 200:
            problems.append("by: at most 200 characters")
        if problems:
            raise NetworkRequestError("; ".join(problems))
        request = OperatorReleaseRequest(identity=who, reason=reason.strip())
        released: NetworkDescription = await self._network_update(
            name, UPDATE_OPERATOR_RELEASE, request, NetworkDescription
        )
        return released

    async def clear_drained(
        self, name: str, member: str, reason: str, *, identity: str | None = None
    ) -> NetworkDescription:
        """Clear ``member`` from the network's left-drained list (recorded with who and why).

        For an operator who restored the member's annotations by hand (or knows it
        is gone); refused when the member is not listed.
        """
        _check_network_name(name)
        who = (identity if identity is not None else runs.default_identity()).strip()
        problems = []
        if not member.strip():
            problems.append("member: name the member listed as left drained")
        elif len(member) > 200:
            problems.append("member: at most 200 characters")
        if not reason.strip():
            problems.append("reason: say why the member is cleared (it is recorded)")
        elif len(reason) > 1000:
            problems.append("reason: at most 1000 characters")
        if not who:
            problems.append("by: name who clears the member (it is recorded)")
        elif len(who) > 200:
            problems.append("by: at most 200 characters")
        if problems:
            raise NetworkRequestError("; ".join(problems))
        request = ClearDrainedRequest(member=member.strip(), identity=who, reason=reason.strip())
        cleared: NetworkDescription = await self._network_update(
            name, UPDATE_CLEAR_DRAINED, request, NetworkDescription
        )
        return cleared

    async def _followed(self, name: str, result: OperationResult) -> OperationResult:
        """The operation's result, asked of the network's next run when it continued as new."""
        while result.continued:
            result = await self._network_update(
                name, UPDATE_OPERATION, OperationRequest(id=result.operation), OperationResult
            )
        return result

    async def _running_network(self, name: str) -> WorkflowHandle[Any, Any]:
        handle = self.temporal.get_workflow_handle(network_workflow_id(name))
        try:
            description = await handle.describe()
        except Exception as error:
            raise _network_error(name, error) from None
        if description.status is not WorkflowExecutionStatus.RUNNING:
            raise NotFoundError(f"network {name!r} does not exist (it was deleted)")
        return handle

    async def _network_update(
        self, name: str, update: str, request: DomainModel, result_type: type[T]
    ) -> T:
        handle = await self._running_network(name)
        try:
            result: T = await handle.execute_update(update, request, result_type=result_type)
        except Exception as error:
            raise _network_error(name, error) from None
        return result

    # --- update runs ---

    async def start_update_run(
        self,
        spec: RunSpec,
        *,
        timings: RunTimings | None = None,
        catalog_file: Path | None = None,
    ) -> UpdateRunHandle:
        """Start a run (the strategy and release catalog are snapshotted into it)."""
        return await runs.start_update_run(
            self.temporal, self.task_queue, spec, timings=timings, catalog_file=catalog_file
        )

    async def get_update_run(self, run: str, network: str | None = None) -> UpdateRunHandle:
        """A run by ``network/run``, or by name (with ``network`` or when unique)."""
        return await runs.find_run(self.temporal, run, network)

    async def list_runs(
        self, network: str | None = None, state: State | None = None
    ) -> list[runs.RunSummary]:
        """Runs, newest first, through the search attributes the Web UI uses too."""
        return await runs.list_runs(self.temporal, network, state)

    # --- schedules (auto-upgrade profiles; engine/runtime/schedules.py) ---

    async def create_schedule(self, profile: AutoUpgradeProfile) -> ProfileStatus:
        """Create the profile's Temporal Schedule (``autoupgrade/<name>``)."""
        return await schedules.create_profile(self.temporal, self.task_queue, profile)

    async def list_schedules(self) -> list[ProfileStatus]:
        """Every profile with its next action times and last trigger."""
        return await schedules.list_profiles(self.temporal)

    async def show_schedule(self, name: str) -> ProfileStatus:
        """One profile: its schedule's state, next action times and last trigger."""
        return await schedules.describe_profile(self.temporal, name)

    async def pause_schedule(self, name: str, note: str | None = None) -> ProfileStatus:
        """Stop the schedule from firing until unpaused."""
        return await schedules.pause_profile(self.temporal, name, note)

    async def unpause_schedule(self, name: str, note: str | None = None) -> ProfileStatus:
        """Let the schedule fire again at the next opening."""
        return await schedules.unpause_profile(self.temporal, name, note)

    async def trigger_schedule(self, name: str) -> ProfileStatus:
        """Fire the schedule now and return the status once that trigger has finished."""
        return await schedules.trigger_profile(self.temporal, name)

    async def delete_schedule(self, name: str) -> None:
        """Delete the schedule (runs it created are not touched)."""
        await schedules.delete_profile(self.temporal, name)
