"""The network's member list a member's steps read: from its input, or from its run.

Members started before issue 19 carry the list in their input
(``MemberUpdateInput.network_members``) and it is used as it is. Members
started since carry a :class:`~engine.domain.roster.RosterRef`: the list is
read once per worker, from the run's history (what its ``acquire_network``
returned: the server answers that, however busy the run's worker is) or else
from the run's ``roster`` query, checked against the reference's size and
digest, and kept for every later step of every member of that run. Concurrent
steps of one run share one read.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import Awaitable, Callable

import structlog
from temporalio.client import Client

from engine.domain.errors import MeshfleetError, Retry, UnavailableError
from engine.domain.roster import QUERY_ROSTER, RosterRef, RunRoster, roster_digest
from engine.domain.run import ACQUIRE_NETWORK, LeasedNetwork, MemberUpdateInput

log = structlog.get_logger(__name__)

#: Rosters kept per worker: a worker serving many runs at once keeps the latest ones.
CACHED_ROSTERS = 256

Fetch = Callable[[RosterRef], Awaitable[RunRoster]]


class RosterMismatchError(MeshfleetError):
    """The run answered a member list other than the one its member was started with."""

    retry = Retry.NON_RETRYABLE  # asking again gives the same list: the step fails at once


#: How many events of a run's first history are read for its acquire (ample: it is early).
HISTORY_PAGE = 100
#: A query waits for the run's workflow task: a run busy with 255 members can take a while.
QUERY_TIMEOUT = dt.timedelta(seconds=30)


async def acquired_roster(client: Client, ref: RosterRef) -> RunRoster | None:
    """The list as the run instance's ``acquire_network`` returned it, from its history.

    Served by the server alone (no worker, however busy the run is). None when no
    acquire in that run's history returned the list the reference names (a run that
    took the network again after continuing as new).
    """
    if not ref.run_instance:
        return None
    handle = client.get_workflow_handle(ref.workflow_id, run_id=ref.run_instance)
    acquires: set[int] = set()
    async for event in handle.fetch_history_events(page_size=HISTORY_PAGE):
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == ACQUIRE_NETWORK:
                acquires.add(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes"):
            completed = event.activity_task_completed_event_attributes
            if completed.scheduled_event_id not in acquires:
                continue
            [leased] = await client.data_converter.decode(
                completed.result.payloads, [LeasedNetwork]
            )
            if roster_digest(leased.members) == ref.digest:
                return RunRoster(run_instance=ref.run_instance, members=leased.members)
    return None


def query_run(client: Client) -> Fetch:
    """Read a run's roster: from its acquire in its history, else from its ``roster`` query."""

    async def fetch(ref: RosterRef) -> RunRoster:
        try:
            roster = await acquired_roster(client, ref)
            if roster is not None:
                return roster
            handle = client.get_workflow_handle(ref.workflow_id)
            found: RunRoster = await handle.query(
                QUERY_ROSTER, result_type=RunRoster, rpc_timeout=QUERY_TIMEOUT
            )
            if found.run_instance != ref.run_instance and ref.run_instance:
                # A later run under the same name: ask the instance that started the member.
                handle = client.get_workflow_handle(ref.workflow_id, run_id=ref.run_instance)
                found = await handle.query(
                    QUERY_ROSTER, result_type=RunRoster, rpc_timeout=QUERY_TIMEOUT
                )
        except Exception as error:
            raise UnavailableError(
                f"cannot read the member list of run {ref.workflow_id}: {error}"
            ) from error
        return found

    return fetch


class RosterReader:
    """The member list each step reads, fetched once per run instance and digest."""

    def __init__(self, fetch: Fetch, *, capacity: int = CACHED_ROSTERS) -> None:
        self._fetch = fetch
        self._capacity = capacity
        #: (run workflow id, run instance, digest) -> the read of that list.
        self._rosters: collections.OrderedDict[tuple[str, str, str], asyncio.Task[list[str]]] = (
            collections.OrderedDict()
        )

    async def members(self, member: MemberUpdateInput) -> list[str]:
        """The network's members for ``member``'s step (its own list if it carries one)."""
        if member.network_members or member.roster is None:
            return member.network_members
        ref = member.roster
        key = (ref.workflow_id, ref.run_instance, ref.digest)
        task = self._rosters.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._verified(ref))
            self._rosters[key] = task
            while len(self._rosters) > self._capacity:
                self._rosters.popitem(last=False)
        self._rosters.move_to_end(key)
        # Shielded: one step cancelled must not cancel the read other steps wait on.
        return await asyncio.shield(task)

    async def _verified(self, ref: RosterRef) -> list[str]:
        roster = await self._fetch(ref)
        digest = roster_digest(roster.members)
        if len(roster.members) != ref.size or digest != ref.digest:
            raise RosterMismatchError(
                f"run {ref.workflow_id} lists {len(roster.members)} members ({digest}), "
                f"not {ref.describe()} its member was started with"
            )
        log.info("roster.read", run=ref.workflow_id, members=ref.size)
        return roster.members
