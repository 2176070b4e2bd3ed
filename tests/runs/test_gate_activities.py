"""The built-in gates' activities: a mesh still not ready is an answer, a broken read is not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import cast

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.run_steps import RunStepActivities
from engine.domain import run as contract
from engine.domain.backend import FleetBackend
from engine.domain.mesh import NotReadyLink

LINK = NotReadyLink(viewer="a", peer="b", reason="Waiting for initial connection")


class FlakyMesh:
    """Answers ``not_ready_links`` from a script: a list is returned, an error raised."""

    def __init__(self, *answers: list[NotReadyLink] | Exception) -> None:
        self.answers = list(answers)

    async def not_ready_links(
        self, members: Sequence[str], *, focus: str | None = None
    ) -> list[NotReadyLink]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def gate(*answers: list[NotReadyLink] | Exception) -> RunStepActivities:
    backend = cast(FleetBackend, FlakyMesh(*answers))
    return RunStepActivities(backend, cast(Client, None))


async def test_a_mesh_still_not_ready_at_the_timeout_is_reported_unhealthy_with_its_links() -> None:
    request = contract.MeshHealthRequest(members=["a", "b"], timeout=dt.timedelta(0))
    result = await ActivityEnvironment().run(gate([LINK]).check_mesh_health, request)
    assert result == contract.MeshHealthResult(healthy=False, not_ready=[LINK])


async def test_a_read_that_breaks_after_a_not_ready_one_fails_the_activity_instead() -> None:
    """A backend error is not "the mesh is unhealthy": it fails (classified) and is retried
    or reported as the error it is, never turned into a gate verdict."""
    request = contract.MeshHealthRequest(members=["a", "b"], timeout=dt.timedelta(seconds=5))
    activities = gate([LINK], RuntimeError("the API server said no"))
    with pytest.raises(ApplicationError, match="the API server said no"):
        await ActivityEnvironment().run(activities.check_mesh_health, request)
