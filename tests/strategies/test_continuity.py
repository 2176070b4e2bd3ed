"""Members the continuity rule could never let drain, found from the plan alone."""

from __future__ import annotations

import datetime as dt

from engine.domain.versions import Version
from strategies import ReleaseCatalog, plan
from strategies.continuity import ServiceCopies, undrainable_members
from tests.strategies.conftest import member, strategy

ONE_STAGE = strategy({"name": "s", "groups": [{"name": "g"}]})


def test_a_service_only_the_member_serves_flags_it_with_the_counts(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    planned = plan(
        [member("a", group="g"), member("b", group="g")],
        ONE_STAGE,
        Version.parse("1.33"),
        catalog,
        now,
    )
    services = [ServiceCopies("shop/ledger", None, {"a": 3})]
    (found,) = undrainable_members(planned, services, default_minimum=1)
    assert (found.member, found.service, found.ready_elsewhere, found.minimum) == (
        "a",
        "shop/ledger",
        0,
        1,
    )


def test_a_minimum_that_the_other_copies_meet_flags_nobody(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    planned = plan(
        [member("a", group="g"), member("b", group="g")],
        ONE_STAGE,
        Version.parse("1.33"),
        catalog,
        now,
    )
    services = [ServiceCopies("shop/cart", 2, {"a": 2, "b": 2})]
    assert undrainable_members(planned, services, default_minimum=1) == []


def test_a_declared_minimum_above_what_the_others_have_flags_each_member_that_serves_it(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    planned = plan(
        [member("a", group="g"), member("b", group="g")],
        ONE_STAGE,
        Version.parse("1.33"),
        catalog,
        now,
    )
    services = [ServiceCopies("shop/cart", 3, {"a": 2, "b": 2})]
    assert [u.member for u in undrainable_members(planned, services, 1)] == ["a", "b"]


def test_a_member_already_at_the_target_is_never_drained_so_never_flagged(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    planned = plan(
        [member("a", group="g", kubernetes="1.33.1"), member("b", group="g")],
        ONE_STAGE,
        Version.parse("1.33"),
        catalog,
        now,
    )
    services = [ServiceCopies("shop/ledger", None, {"a": 3})]
    assert undrainable_members(planned, services, default_minimum=1) == []


def test_copies_outside_the_plans_members_do_not_count(
    catalog: ReleaseCatalog, now: dt.datetime
) -> None:
    planned = plan([member("a", group="g")], ONE_STAGE, Version.parse("1.33"), catalog, now)
    services = [ServiceCopies("shop/ledger", None, {"a": 3, "not-a-member": 5})]
    assert [u.member for u in undrainable_members(planned, services, 1)] == ["a"]
