"""Runtime settings from the environment: parsed, or refused naming the variable."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.domain.errors import InvalidInputError
from engine.runtime import settings
from engine.runtime.client import default_network_settings


def test_a_new_network_takes_its_waits_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESHFLEET_MESH_READY_TIMEOUT", "90s")
    monkeypatch.setenv("MESHFLEET_DEGRADED_RECHECK_INTERVAL", "30s")
    network = default_network_settings()
    assert network.mesh_ready_timeout == dt.timedelta(seconds=90)
    assert network.degraded_recheck_interval == dt.timedelta(seconds=30)


def test_without_the_environment_a_degraded_network_is_read_again_every_five_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MESHFLEET_DEGRADED_RECHECK_INTERVAL", raising=False)
    assert settings.degraded_recheck_interval() == dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("value", "rule"), [("500ms", "must be at least 1s"), ("soon", "duration"), ("0s", "positive")]
)
def test_a_recheck_interval_below_a_second_or_unparsable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, rule: str
) -> None:
    monkeypatch.setenv("MESHFLEET_DEGRADED_RECHECK_INTERVAL", value)
    with pytest.raises(InvalidInputError) as raised:
        settings.degraded_recheck_interval()
    [error] = raised.value.errors
    assert error.path == "$MESHFLEET_DEGRADED_RECHECK_INTERVAL"
    assert rule in error.message
