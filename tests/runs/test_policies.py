"""Activity timeouts and retry policies keep the values histories were recorded with.

A changed value changes the ScheduleActivityTask commands of new workflows; the
names in ``workflows/policies.py`` were gathered from four workflows, each value
as it was there.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows import policies

SECOND = timedelta(seconds=1)


def backoff(maximum: timedelta, attempts: int = 0) -> RetryPolicy:
    """From one second, doubling up to ``maximum`` (0 attempts: no limit)."""
    return RetryPolicy(
        initial_interval=SECOND,
        backoff_coefficient=2.0,
        maximum_interval=maximum,
        maximum_attempts=attempts,
    )


#: Each name's value as the workflow that used it had it.
RECORDED: dict[str, object] = {
    "QUICK": timedelta(minutes=2),
    "QUICK_READ": 30 * SECOND,
    "MARGIN": timedelta(minutes=1),
    # Decides whether a stage asks the mesh before it (which commands the run records).
    "MESH_CHECK_FRESH_FOR": 5 * SECOND,
    "NETWORK_RETRY_FOR": timedelta(minutes=15),
    "RUN_RETRY": RetryPolicy(maximum_attempts=5, maximum_interval=10 * SECOND),
    "BEST_EFFORT_RETRY": RetryPolicy(maximum_attempts=3, maximum_interval=5 * SECOND),
    "RELEASE_RETRY": RetryPolicy(maximum_interval=30 * SECOND),
    "READ_RETRY": RetryPolicy(maximum_attempts=3, initial_interval=SECOND),
    "STEP_RETRY": backoff(30 * SECOND, attempts=5),
    "RESTORE_UNTIL_TIMEOUT": backoff(60 * SECOND),
    "RESTORE_RETRY": backoff(60 * SECOND, attempts=30),
    "NETWORK_RETRY": backoff(30 * SECOND),
    "ONE_TRY": RetryPolicy(maximum_attempts=1),
}


def test_every_timeout_and_retry_policy_keeps_the_value_its_workflow_had() -> None:
    assert {name: getattr(policies, name) for name in policies.__all__} == RECORDED
