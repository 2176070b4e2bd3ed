"""Kubernetes label selectors: parsing, matching and clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import SelectorError, parse_selector
from strategies.selectors import LabelSelector, Operator, Requirement

KEYS = st.sampled_from(["region", "ring", "tier", "example.com/team", "a"])
VALUES = st.sampled_from(["eu", "us", "ap", "canary", "main", "x-1", "v1.2"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    operator = draw(st.sampled_from(list(Operator)))
    key = draw(KEYS)
    if operator in {Operator.EQUALS, Operator.NOT_EQUALS}:
        return Requirement(key, operator, (draw(VALUES),))
    if operator in {Operator.IN, Operator.NOT_IN}:
        values = draw(st.lists(VALUES, min_size=1, max_size=3, unique=True))
        return Requirement(key, operator, tuple(values))
    return Requirement(key, operator)


def expected(requirement: Requirement, labels: dict[str, str]) -> bool:
    """The Kubernetes semantics, written out plainly."""
    value = labels.get(requirement.key)
    if requirement.operator in {Operator.EQUALS, Operator.IN}:
        return value is not None and value in requirement.values
    if requirement.operator in {Operator.NOT_EQUALS, Operator.NOT_IN}:
        return value is None or value not in requirement.values
    if requirement.operator is Operator.EXISTS:
        return value is not None
    return value is None


@settings(max_examples=300, deadline=None)
@given(st.lists(requirements(), max_size=4), LABELS)
def test_a_printed_selector_parses_back_and_matches_like_kubernetes(
    reqs: list[Requirement], labels: dict[str, str]
) -> None:
    selector = LabelSelector(tuple(reqs))
    parsed = parse_selector(str(selector))
    assert parsed == selector
    assert parsed.matches(labels) == all(expected(r, labels) for r in reqs)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc=!(), in notin/.-_", max_size=40))
def test_any_text_parses_or_raises_a_selector_error(text: str) -> None:
    problem = ""
    try:
        parse_selector(text)
    except SelectorError as error:
        problem = str(error) or "(empty message)"
    assert problem != "(empty message)"


@given(LABELS)
def test_the_empty_selector_matches_every_member(labels: dict[str, str]) -> None:
    assert parse_selector("").matches(labels)
    assert parse_selector("   ").matches(labels)


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("region=eu", {"region": "eu"}, True),
        ("region==eu", {"region": "us"}, False),
        ("region!=eu", {}, True),
        ("region in (eu, us)", {"region": "us"}, True),
        ("region notin (eu,us)", {"region": "ap"}, True),
        ("region notin (eu,us)", {}, True),
        ("gpu", {"gpu": "true"}, True),
        ("!gpu", {"gpu": "true"}, False),
        ("region=eu,ring!=canary", {"region": "eu", "ring": "canary"}, False),
        ("region = eu , !gpu", {"region": "eu"}, True),
    ],
)
def test_selectors_follow_kubernetes_semantics(
    text: str, labels: dict[str, str], matches: bool
) -> None:
    assert parse_selector(text).matches(labels) is matches


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("region in eu", "expected '('"),
        ("region in (eu", "closing ')'"),
        ("region >< eu", "expected '='"),
        ("=eu", "expected a label key"),
        ("region=eu ring=main", "expected ','"),
        ("Region_=x", "not a label key"),
        ("region=-eu", "not a label value"),
        ("region in ()", "at least one value"),
        ("x" * 513, "at most 512"),
    ],
)
def test_broken_selectors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError, match=None) as raised:
        parse_selector(text)
    assert fragment in str(raised.value)
