"""The run's plan as an activity: computed once, recorded in the run's history.

Planning is pure (``strategies.plan``); it runs here rather than in workflow
code so that the plan a run executes is the one recorded when it started. A
worker running newer planner code replays the recorded result instead of
planning again, so a planner change never alters the members an in-flight
run starts (README, "Changing workflow code").
"""

from __future__ import annotations

from temporalio import activity

from engine.domain import run as contract
from engine.domain.errors import InvalidInputError
from engine.domain.versions import Version
from strategies import parse_catalog, plan


@activity.defn(name=contract.COMPUTE_PLAN)
async def compute_plan(request: contract.PlanRequest) -> contract.PlanResult:
    """Plan the run; a plan the rules refuse comes back as its errors, not as a failure."""
    try:
        planned = plan(
            request.members,
            request.strategy,
            Version.parse(request.target),
            parse_catalog(request.catalog),
            request.at,
            allow_multi_minor=request.allow_multi_minor,
        )
    except InvalidInputError as error:
        return contract.PlanResult(errors=[str(e) for e in error.errors])
    return contract.PlanResult(plan=planned)
