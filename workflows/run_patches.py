"""Every patch of the update-run workflow, named once.

Each id marks where today's code differs from the code that recorded older
histories: ``workflow.patched(id)`` takes the new path in new runs and keeps
the old path on replay. The ids are history: never rename or reuse one.
"""

from __future__ import annotations

# h-ops: each member workflow names its network and cluster (MeshfleetMember), from this patch on.
MEMBER_SEARCH_ATTRIBUTE_PATCH = "member-search-attribute"

#: Patch: an activity error in preparation, a gate or a soak fails the stage or the run
#: (which stays open) instead of failing the workflow.
PATCH_SURVIVE_ACTIVITY_ERRORS = "run-survives-activity-errors"
#: Patch: a run cancelled (or failed by an error nothing absorbed) releases its network.
PATCH_RELEASE_ON_ANY_END = "run-release-on-any-end"
#: Patch: a failure no budget absorbs halts the whole run at once (not just its group).
PATCH_BUDGET_HALTS_RUN = "run-budget-halts-run"
#: Patch: a member whose restore could not complete is reported to the network.
PATCH_REPORT_LEFT_DRAINED = "report-left-drained"
#: Patch: a run on a network without members fails at once (it used to "run" 0/0).
PATCH_REFUSE_EMPTY_NETWORK = "run-refuse-empty-network"
#: Patch: skipping a stage or group skips its waiting gates (a later approve is refused).
PATCH_SKIP_RELEASES_GATES = "run-skip-releases-gates"
#: Patch: a partial retry excuses the failures it leaves, so its members can run.
PATCH_RETRY_EXCUSES_OTHERS = "run-retry-excuses-others"
#: Patch: resume and retry clear a member's deferral (a give-up can be retried).
PATCH_REOPEN_CLEARS_DEFERRAL = "run-reopen-clears-deferral"
#: Patch: the scheduler orders members with the planner's function.
PATCH_SHARED_MEMBER_ORDER = "run-shared-member-order"
#: Patch: dependents of a skipped stage wait for its members still in flight.
PATCH_DEPENDENTS_WAIT_IN_FLIGHT = "run-dependents-wait-in-flight"
#: Patch: a resume while Stopping carries on instead of ending Failed.
PATCH_RESUME_WHILE_STOPPING = "run-resume-while-stopping"
#: Patch: resume and retry read the network again (removed members are skipped).
PATCH_REREAD_ON_REOPEN = "run-reread-on-reopen"
#: Patch: no soak after a stage in which nothing was upgraded (recorded as Skipped).
PATCH_SOAK_ONLY_AFTER_UPGRADES = "run-soak-only-after-upgrades"
#: Patch: a stage skipped while a check ran stays Skipped when the check then fails.
PATCH_SKIPPED_STAGE_STAYS_SKIPPED = "run-skipped-stage-stays-skipped"
#: Patch: a soak resumed after a stop serves only what was left of it.
PATCH_SOAK_KEEPS_SERVED = "run-soak-keeps-served"
#: Patch: the run continues as new during long waits, not only while lingering.
PATCH_CONTINUE_AS_NEW_WHILE_WAITING = "run-continue-as-new-while-waiting"
#: Patch: one timer per window opening, not one per change of the run while waiting.
PATCH_ONE_TIMER_PER_OPENING = "run-one-timer-per-opening"
#: Patch: a failed acquire is followed by a release (the network may have granted it).
PATCH_RELEASE_AFTER_FAILED_ACQUIRE = "run-release-after-failed-acquire"
#: Patch: the plan is computed by an activity and recorded, never recomputed on replay.
PATCH_PLAN_RECORDED = "run-plan-recorded"
#: Patch: members' inputs name the run's roster instead of copying the member list.
PATCH_ROSTER_BY_REFERENCE = "run-member-roster-by-reference"
#: Patch: members' inputs say they drain by recording first (``record_first``), so the
#: member workflow no longer asks its own patch (a marker and a search-attribute upsert
#: per member).
PATCH_MEMBER_RECORD_FIRST_BY_INPUT = "run-member-record-first-by-input"
#: Patch: the mesh and endpoints checks after a stage run at once, not one after the other.
PATCH_AFTER_CHECKS_TOGETHER = "run-after-checks-together"
#: Patch: a stage's mesh check before it is met by the healthy check after the stage it
#: follows, when that is fresh (``MESH_CHECK_FRESH_FOR``), no member started since and the
#: network's members are the same: one round trip and one full mesh read fewer per stage.
PATCH_BEFORE_CHECK_REUSES_AFTER = "run-before-check-reuses-after"
