"""Mistakes in files come with the fix: the field meant, or the quotes a version needs."""

from __future__ import annotations

import pytest

from engine.domain.errors import InvalidInputError
from engine.domain.fleet import parse_fleet
from strategies import parse_strategy


def test_an_unknown_strategy_field_suggests_the_field_meant() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_strategy(
            {
                "apiVersion": "meshfleet.io/v1alpha1",
                "kind": "UpdateStrategy",
                "metadata": {"name": "s"},
                "spec": {"stages": [{"name": "a", "afterStageWiat": "1m", "groups": []}]},
            }
        )
    (error,) = raised.value.errors
    assert error.path == "spec.stages[0].afterStageWiat"
    assert "did you mean 'afterStageWait'?" in error.message


def test_an_unknown_fleet_field_suggests_the_field_meant() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_fleet(
            {
                "apiVersion": "meshfleet.io/v1alpha1",
                "kind": "SimulatedFleet",
                "metadata": {"name": "f"},
                "spec": {
                    "clusters": [
                        {"name": "a", "kubernetesVersion": "1.32.6", "ciliumVersoin": "1.17.9"}
                    ]
                },
            }
        )
    messages = [e.message for e in raised.value.errors]
    assert any("did you mean 'ciliumVersion'?" in m for m in messages), messages


def test_an_unquoted_version_says_to_quote_it() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_fleet(
            {
                "apiVersion": "meshfleet.io/v1alpha1",
                "kind": "SimulatedFleet",
                "metadata": {"name": "f"},
                "spec": {
                    "clusters": [
                        {"name": "a", "kubernetesVersion": 1.32, "ciliumVersion": "1.17.9"}
                    ]
                },
            }
        )
    (error,) = raised.value.errors
    assert error.path == "spec.clusters[0].kubernetesVersion"
    assert 'quote it: "1.32"' in error.message
