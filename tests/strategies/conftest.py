"""Shared fixtures for the strategy and planning tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from engine.domain.member import Member
from engine.domain.strategy import UpdateStrategy
from strategies import ReleaseCatalog, bundled_catalog, parse_strategy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: A fixed moment (a Saturday, 02:30 UTC) so window-ordered plans are reproducible.
NOW = dt.datetime(2026, 11, 28, 2, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def catalog() -> ReleaseCatalog:
    """The bundled release catalog."""
    return bundled_catalog()


@pytest.fixture
def now() -> dt.datetime:
    """The planning moment every test uses."""
    return NOW


def member(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    group: str | None = None,
    kubernetes: str = "1.32.6",
    cilium: str = "1.17.9",
    window: dict[str, Any] | None = None,
) -> Member:
    """A member with sensible defaults (1.32 with its bundled Cilium)."""
    return Member.model_validate(
        {
            "name": name,
            "labels": labels or {},
            "updateGroup": group,
            "kubernetesVersion": kubernetes,
            "ciliumVersion": cilium,
            "maintenanceWindow": window,
        }
    )


def strategy(*stages: dict[str, Any], name: str = "test") -> UpdateStrategy:
    """A native strategy from stage dicts written as in a file (rules checked)."""
    return parse_strategy(
        {
            "apiVersion": "meshfleet.io/v1alpha1",
            "kind": "UpdateStrategy",
            "metadata": {"name": name},
            "spec": {"stages": list(stages)},
        }
    )
