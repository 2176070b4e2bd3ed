"""Fuzz: generated strategy documents, valid and broken, end in a plan or in
validation errors, never in another exception."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.domain.errors import InvalidInputError
from engine.domain.plan import Plan
from engine.domain.versions import Version
from strategies import bundled_catalog, parse_strategy, plan
from tests.strategies.conftest import member

CATALOG = bundled_catalog()
NOW = dt.datetime(2026, 11, 28, 2, 30, tzinfo=dt.UTC)
MEMBERS = [
    member("eu-1", labels={"region": "eu", "ring": "canary"}, group="canary"),
    member("eu-2", labels={"region": "eu", "ring": "main"}, group="eu"),
    member("us-1", labels={"region": "us", "ring": "main"}, group="us"),
    member(
        "us-2",
        labels={"region": "us", "ring": "main"},
        group="us",
        kubernetes="1.31.2",
        cilium="1.16.16",
    ),
    member("ap-1", labels={"region": "ap"}, group="ap", kubernetes="1.33.0"),
]
NAMES = st.sampled_from(["canary", "eu", "us", "ap", "main", "x", "Bad", "-x", "a" * 51, ""])
QUANTITY = st.one_of(
    st.sampled_from(["1", "2", "0", "50%", "100%", "101%", "0%", "abc", "3", "33%"]),
    st.integers(-2, 60),
    st.none(),
)
SELECTORS = st.sampled_from(
    ["region=eu", "region in (us,ap)", "ring!=canary", "!ring", "region", "bad in", "", "=x"]
)
GATE = st.fixed_dictionaries(
    {"type": st.sampled_from(["Approval", "ScheduledStart", "Nope"])},
    optional={
        "displayName": st.sampled_from(["ok", "", "x" * 120]),
        "startDay": st.sampled_from(["Monday", "Funday"]),
        "startTime": st.sampled_from(["09:00", "24:00", "9"]),
        "utcOffset": st.sampled_from(["+01:00", "+15:00", "-14:00", "x"]),
    },
)
JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
)
GROUP = st.fixed_dictionaries(
    {"name": NAMES},
    optional={
        "members": st.lists(
            st.sampled_from(["eu-1", "eu-2", "us-1", "us-2", "ap-1", "ghost"]), max_size=3
        ),
        "selector": SELECTORS,
        "maxConcurrency": QUANTITY,
        "maxAllowedFailures": QUANTITY,
        "beforeGates": st.lists(GATE, max_size=2),
        "afterGates": st.lists(GATE, max_size=1),
        "surprise": JUNK,
    },
)
STAGE = st.fixed_dictionaries(
    {"name": NAMES, "groups": st.one_of(st.lists(GROUP, max_size=4), JUNK)},
    optional={
        "dependsOn": st.one_of(st.lists(NAMES, max_size=3), JUNK),
        "maxConcurrency": QUANTITY,
        "maxAllowedFailures": QUANTITY,
        "afterStageWait": st.sampled_from(["90s", "10m", "1h30m", "soon", 30, -5]),
        "beforeGates": st.lists(GATE, max_size=2),
        "afterGates": st.lists(GATE, max_size=2),
    },
)
NATIVE = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["meshfleet.io/v1alpha1", "v2"]),
        "kind": st.sampled_from(["UpdateStrategy", "Other"]),
        "metadata": st.one_of(st.fixed_dictionaries({"name": NAMES}), JUNK),
        "spec": st.one_of(st.fixed_dictionaries({"stages": st.lists(STAGE, max_size=5)}), JUNK),
    }
)
FLEET_GROUP = st.fixed_dictionaries(
    {"name": NAMES},
    optional={
        "maxConcurrency": QUANTITY,
        "memberSelector": st.one_of(st.fixed_dictionaries({"byLabel": SELECTORS}), JUNK),
    },
)
FLEET = st.fixed_dictionaries(
    {
        "strategy": st.fixed_dictionaries(
            {
                "stages": st.lists(
                    st.fixed_dictionaries(
                        {"name": NAMES, "groups": st.lists(FLEET_GROUP, max_size=3)},
                        optional={
                            "afterStageWaitInSeconds": st.integers(-10, 4000),
                            "memberSelector": st.fixed_dictionaries({"byLabel": SELECTORS}),
                            "beforeGates": st.lists(GATE, max_size=1),
                        },
                    ),
                    max_size=4,
                )
            }
        )
    },
    optional={"name": NAMES, "id": st.text(max_size=10)},
)
VALID_QUANTITY = st.sampled_from(["1", "2", "7", "10%", "50%", "100%"])


@st.composite
def valid_native(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed strategy that places every member exactly once."""
    count = draw(st.integers(1, 4))
    stages: list[dict[str, Any]] = [{"name": f"s{i}", "groups": []} for i in range(count)]
    for group in ["canary", "eu", "us", "ap"]:
        target = draw(st.sampled_from(stages))
        spec: dict[str, Any] = {"name": group}
        if draw(st.booleans()):
            spec["maxConcurrency"] = draw(VALID_QUANTITY)
        target["groups"].append(spec)
    for index, stage in enumerate(stages):
        if not stage["groups"]:
            stage["groups"].append({"name": f"empty-{index}"})
        if index and draw(st.booleans()):
            stage["dependsOn"] = draw(
                st.lists(st.sampled_from([f"s{i}" for i in range(index)]), unique=True)
            )
        if draw(st.booleans()):
            stage["maxConcurrency"] = draw(VALID_QUANTITY)
        if draw(st.booleans()):
            stage["beforeGates"] = [
                {"type": "ScheduledStart", "startDay": "Tuesday", "startTime": "09:00"}
            ]
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "UpdateStrategy",
        "metadata": {"name": "fuzzed"},
        "spec": {"stages": stages},
    }


DOCUMENTS = st.one_of(valid_native(), valid_native(), NATIVE, FLEET, JUNK)


@settings(
    max_examples=1200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    DOCUMENTS,
    st.sampled_from([True, True, True, False]),
    st.sampled_from(["1.33", "1.33", "1.33", "1.32.9", "1.34", "1.31"]),
)
def test_every_generated_document_ends_in_a_plan_or_in_validation_errors(
    document: object, allow_multi_minor: bool, target: str
) -> None:
    outcome: Plan | InvalidInputError
    try:
        strategy = parse_strategy(document, check_rules=False)
        outcome = plan(
            MEMBERS,
            strategy,
            Version.parse(target),
            CATALOG,
            NOW,
            allow_multi_minor=allow_multi_minor,
        )
    except InvalidInputError as error:
        outcome = error
    if isinstance(outcome, InvalidInputError):
        event("invalid")
        assert outcome.errors
        assert all(e.message for e in outcome.errors)
        return
    event("planned")
    assert sorted(m.name for m in outcome.members()) == sorted(m.name for m in MEMBERS)
