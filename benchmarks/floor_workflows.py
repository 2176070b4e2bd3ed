"""The benchmark's floor: an update run's shape with no-op bodies (see ``update_run.py``).

A module of its own, as the real workflows are: the workflow sandbox imports a
workflow's module anew for every workflow it creates, and an importable module
comes from its cached bytecode where a script (``__main__``) is compiled from
source each time, which would make the floor slower than it is. Only the
standard library and temporalio here, so the floor pays for nothing else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

#: Activities of one member update (preflight, drain: annotate then wait, control plane,
#: Cilium, verify).
MEMBER_ACTIVITIES = 6
#: A member that drained a global service also restores it (annotations, then the wait).
RESTORE_ACTIVITIES = 2
#: The run's own activities: before the first stage, around each stage, at the end.
RUN_START_ACTIVITIES = 4  # acquire, read the members, plan, the baseline
#: The mesh check before a stage: only the first stage's, as in the run since
#: ``run-before-check-reuses-after`` (each next stage's is the check after the one before).
STAGE_BEFORE_ACTIVITIES = 1
#: The mesh and endpoints checks after a stage, at once (``run-after-checks-together``).
STAGE_AFTER_ACTIVITIES = 2
RUN_END_ACTIVITIES = 1


@dataclass
class FloorInput:
    stages: list[list[str]]
    prefix: str
    #: Members serving a global service (they restore what their drain annotated).
    serving: list[str]


@dataclass
class FloorMember:
    name: str
    serves: bool


@activity.defn(name="floor_noop")
async def floor_noop(step: str) -> str:
    """Does nothing: what is left is Temporal's own cost."""
    return step


_OPTIONS: dict[str, Any] = {"start_to_close_timeout": timedelta(minutes=2)}


@workflow.defn(name="FloorMember")
class FloorMemberWorkflow:
    @workflow.run
    async def run(self, member: FloorMember) -> str:
        for step in range(MEMBER_ACTIVITIES + (RESTORE_ACTIVITIES if member.serves else 0)):
            await workflow.execute_activity(floor_noop, f"{member.name}/{step}", **_OPTIONS)
        return member.name


@workflow.defn(name="FloorRun")
class FloorRunWorkflow:
    @workflow.run
    async def run(self, request: FloorInput) -> int:
        async def noops(count: int, label: str) -> None:
            for index in range(count):
                await workflow.execute_activity(floor_noop, f"{label}/{index}", **_OPTIONS)

        async def together(count: int, label: str) -> None:
            await asyncio.gather(
                *(
                    workflow.execute_activity(floor_noop, f"{label}/{index}", **_OPTIONS)
                    for index in range(count)
                )
            )

        await noops(RUN_START_ACTIVITIES, "start")
        done = 0
        for index, members in enumerate(request.stages):
            if index == 0:
                await noops(STAGE_BEFORE_ACTIVITIES, f"stage{index}/before")
            results = await asyncio.gather(
                *(
                    workflow.execute_child_workflow(
                        FloorMemberWorkflow.run,
                        FloorMember(name=name, serves=name in request.serving),
                        id=f"{request.prefix}/member/{name}",
                    )
                    for name in members
                )
            )
            done += len(results)
            await together(STAGE_AFTER_ACTIVITIES, f"stage{index}/after")
        await noops(RUN_END_ACTIVITIES, "end")
        return done
