"""The network's member list as a run hands it to its members: by reference.

A run reads the network's members once, when it takes the network, and keeps
them in its state. Its members' steps that look at peers (preflight, drain,
verify, restore) need that list, but copying it into every member's input put
it into every member's history several times over (a 255-member network: a
member history of 19.7 kB instead of 4.4 kB). So a member's input carries a
:class:`RosterRef` instead: which run holds the list, how many members it has
and a digest of it. The activities read the list once per worker (from what the
run's ``acquire_network`` returned in its history, else from its
:data:`QUERY_ROSTER` query) and check it against the digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from engine.domain.model import DomainModel

#: The run workflow's query answering its network's member list (a :class:`RunRoster`).
QUERY_ROSTER = "roster"


class RunRoster(DomainModel):
    """The network's members as a run took them, and which run instance says so."""

    #: The run's first Temporal run id (``RunState.run_instance``; empty in older runs).
    run_instance: str
    members: list[str]


class RosterRef(DomainModel):
    """Where a member's steps read the network's member list, and how to know it is the one.

    In the Web UI a member's input reads as "the ``size`` members of the run
    ``workflow_id`` (instance ``run_instance``: what its ``acquire_network`` returned,
    and what its ``roster`` query answers), whose list hashes to ``digest``".
    """

    #: The run workflow holding the list: its ``roster`` query answers it.
    workflow_id: str
    #: The run instance (first Temporal run id) that recorded the list.
    run_instance: str
    #: How many members the list has.
    size: int
    #: ``sha256:<hex>`` of the list (:func:`roster_digest`).
    digest: str

    def describe(self) -> str:
        """The reference in words, for error messages."""
        return f"the {self.size} members of run {self.workflow_id} ({self.digest})"


def roster_digest(members: Sequence[str]) -> str:
    """``sha256:<hex>`` of the member names in order, one per line (deterministic)."""
    return "sha256:" + hashlib.sha256("\n".join(members).encode()).hexdigest()


def roster_ref(workflow_id: str, run_instance: str, members: Sequence[str]) -> RosterRef:
    """The reference a run puts into its members' inputs for its member list."""
    return RosterRef(
        workflow_id=workflow_id,
        run_instance=run_instance,
        size=len(members),
        digest=roster_digest(members),
    )
