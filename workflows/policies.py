"""Every workflow's activity timeouts and retry policies, named once.

Each name is one value with one meaning; a workflow that needs a different
value has its own name for it here. Changing a value changes the commands new
workflows record (the ScheduleActivityTask attributes), so these stay as they
were when each was first recorded.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

__all__ = [
    "BEST_EFFORT_RETRY",
    "MARGIN",
    "MESH_CHECK_FRESH_FOR",
    "NETWORK_RETRY",
    "NETWORK_RETRY_FOR",
    "ONE_TRY",
    "QUICK",
    "QUICK_READ",
    "READ_RETRY",
    "RELEASE_RETRY",
    "RESTORE_RETRY",
    "RESTORE_UNTIL_TIMEOUT",
    "RUN_RETRY",
    "STEP_RETRY",
]

# Timeouts.

#: One short activity (a read, one backend call, a run's creation) finishes within this.
QUICK = timedelta(minutes=2)
#: A read the caller waits for (a health check, the plan's inputs) answers in seconds.
QUICK_READ = timedelta(seconds=30)
#: Added to the time an activity may wait on the fleet, for the calls around the wait.
MARGIN = timedelta(minutes=1)
#: A stage's mesh check before it is met by a healthy one at most this old (the check after
#: the stage it depends on), when no member has started since and the members are the same.
MESH_CHECK_FRESH_FOR = timedelta(seconds=5)
#: A network operation's transient failures (a cluster's API unreachable) are retried this long.
NETWORK_RETRY_FOR = timedelta(minutes=15)

# Retry policies.

#: A run's and an auto-upgrade's short activities: transient failures retried a few times.
RUN_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))
#: Releasing after a failed acquire is best effort: the network may not exist at all.
BEST_EFFORT_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=5))
#: Releasing the network a run holds must get through: retried until it does.
RELEASE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
#: A read the caller waits for: a few quick retries, then the caller hears why.
READ_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
#: A member step's transient errors (API briefly down, a conflict) are retried with
#: backoff; the activities mark errors a retry cannot fix as non-retryable.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
#: Restore must get through: it keeps trying until the member's restore timeout.
RESTORE_UNTIL_TIMEOUT = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
#: Before the member workflow's ``drain-record-first`` patch: restore kept trying 30 times.
RESTORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=30,
)
#: A network operation's backend call, retried with backoff within ``NETWORK_RETRY_FOR``.
NETWORK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
#: Asked once: the caller decides what a failure means (a mesh read at the network's start).
ONE_TRY = RetryPolicy(maximum_attempts=1)
