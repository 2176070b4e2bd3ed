"""The sentence a person reads for a failure: what the innermost error said, its code once."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from workflows.failures import failure_reason, say_code_once


def test_a_code_repeated_by_each_layer_is_said_once() -> None:
    assert (
        say_code_once("singleNetwork: singleNetwork: 'a-1' already belongs to network 'lab'")
        == "singleNetwork: 'a-1' already belongs to network 'lab'"
    )
    assert say_code_once("clusterId: clusterId: clusterId: taken") == "clusterId: taken"


def test_a_code_said_once_and_other_colons_are_left_alone() -> None:
    text = "singleNetwork: 'a-1' is a member of 'prod'; clusterId: 3 is taken"
    assert say_code_once(text) == text
    assert say_code_once("mesh health: a -> b: not ready") == "mesh health: a -> b: not ready"


def test_the_reason_of_an_activity_failure_is_its_innermost_message_with_the_code_once() -> None:
    inner = ApplicationError("singleNetwork: singleNetwork: 'a-1' is taken", non_retryable=True)
    outer = ActivityError(
        "Activity task failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="worker",
        activity_type="acquire_network",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    outer.__cause__ = inner
    assert failure_reason(outer) == "singleNetwork: 'a-1' is taken"
