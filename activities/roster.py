"""The network's member list a member's steps read: from its input, or from its run.

Members started before issue 19 carry the list in their input
(``MemberUpdateInput.network_members``) and it is used as it is. Members
started since carry a :class:`~engine.domain.roster.RosterRef`: the list is
read from the run's ``roster`` query once per worker, checked against the
reference's size and digest, and kept for every later step of every member of
that run. Concurrent steps of one run share one query.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import structlog
from temporalio.client import Client

from engine.domain.errors import MeshfleetError, UnavailableError
from engine.domain.roster import QUERY_ROSTER, RosterRef, RunRoster, roster_digest
from engine.domain.run import MemberUpdateInput

log = structlog.get_logger(__name__)

#: Rosters kept per worker: a worker serving many runs at once keeps the latest ones.
CACHED_ROSTERS = 256

Fetch = Callable[[RosterRef], Awaitable[RunRoster]]


class RosterMismatchError(MeshfleetError):
    """The run answered a member list other than the one its member was started with."""


def query_run(client: Client) -> Fetch:
    """Read a run's roster from its ``roster`` query (its own instance, if one continued)."""

    async def fetch(ref: RosterRef) -> RunRoster:
        try:
            handle = client.get_workflow_handle(ref.workflow_id)
            roster: RunRoster = await handle.query(QUERY_ROSTER, result_type=RunRoster)
            if roster.run_instance != ref.run_instance and ref.run_instance:
                # A later run under the same name: ask the instance that started the member.
                handle = client.get_workflow_handle(ref.workflow_id, run_id=ref.run_instance)
                roster = await handle.query(QUERY_ROSTER, result_type=RunRoster)
        except Exception as error:
            raise UnavailableError(
                f"cannot read the member list of run {ref.workflow_id}: {error}"
            ) from error
        return roster

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
