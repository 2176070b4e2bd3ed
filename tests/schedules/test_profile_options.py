"""``schedule create``'s options become a profile, or every problem at once (exit code 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from engine.domain.errors import InvalidInputError
from engine.domain.schedule import Channel
from engine.domain.windows import DayOfWeek
from engine.runtime import devserver
from engine.runtime.schedules import ProfileOptions, profile_from_options
from tests.runs.harness import strategy
from tests.runtime.serverproc import MESHFLEET


@pytest.fixture
def strategy_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategy.yaml"
    path.write_text(yaml.safe_dump(strategy([{"name": "all", "groups": [{"name": "g"}]}])))
    return path


def options(strategy_file: Path, **changes: object) -> ProfileOptions:
    values: dict[str, object] = {
        "name": "nightly",
        "network": "prod-mesh",
        "strategy": strategy_file,
        "channel": "Rapid",
        "days": "Sat,Sun",
        "start": "02:00",
        "duration": "4h",
        "timezone": "Europe/Berlin",
    }
    values.update(changes)
    return ProfileOptions(**values)  # type: ignore[arg-type]


def problems(opts: ProfileOptions) -> dict[str, str]:
    with pytest.raises(InvalidInputError) as error:
        profile_from_options(opts)
    return {e.path: e.message for e in error.value.errors}


def test_good_options_make_the_profile(strategy_file: Path) -> None:
    profile = profile_from_options(
        options(
            strategy_file,
            channel="targetkubernetesversion",
            target="1.34",
            skip_dates=["2026-12-24"],
        )
    )
    assert profile.channel is Channel.TARGET_KUBERNETES_VERSION
    assert profile.target_kubernetes_version == "1.34"
    assert profile.window.days == [DayOfWeek.SATURDAY, DayOfWeek.SUNDAY]
    assert profile.window.duration_hours == 4
    assert [d.isoformat() for d in profile.window.skip_dates] == ["2026-12-24"]


def test_three_bad_options_are_three_problems_each_naming_its_option(strategy_file: Path) -> None:
    found = problems(
        options(strategy_file, channel="Nightly", timezone="Mars/Olympus", duration="30h")
    )
    assert set(found) == {
        "--channel (channel)",
        "--timezone (window.timeZone)",
        "--duration (window.durationHours)",
    }
    assert "Stable, Rapid, Patch, TargetKubernetesVersion" in found["--channel (channel)"]
    assert "IANA" in found["--timezone (window.timeZone)"]
    assert "1h to 24h" in found["--duration (window.durationHours)"]


def test_every_option_can_be_wrong_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump({"apiVersion": "meshfleet.io/v1alpha1", "kind": "UpdateStrategy"})
    )
    found = problems(
        ProfileOptions(
            name="Not_A_Name",
            network="-bad-",
            strategy=broken,
            channel="Stable",
            target="1.34",
            days="Sat,Caturday,Dogday",
            start="25:99",
            timezone="Nowhere/City",
            duration="0h",
            skip_dates=["2026-02-30"],
        )
    )
    paths = set(found)
    assert {
        "NAME (name)",
        "--network (network)",
        "--target (targetKubernetesVersion)",
        "--days (window.days)",
        "--start (window.startTime)",
        "--timezone (window.timeZone)",
        "--duration (window.durationHours)",
        "--skip-date (window.skipDates[0])",
    } <= paths
    assert any(path.startswith(f"--strategy {broken}") for path in paths), paths
    # Both bad days in one message, not just the first.
    assert "'Caturday'" in found["--days (window.days)"]
    assert "'Dogday'" in found["--days (window.days)"]


def test_a_target_channel_without_a_target_names_the_missing_option(strategy_file: Path) -> None:
    found = problems(options(strategy_file, channel="TargetKubernetesVersion"))
    assert found == {
        "--target (targetKubernetesVersion)": "channel TargetKubernetesVersion needs --target"
    }


async def test_the_cli_lists_every_bad_option_and_exits_2_without_a_traceback(
    temporal_server: devserver.EmbeddedServer, strategy_file: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        MESHFLEET,
        "--address",
        temporal_server.address,
        "schedule",
        "create",
        "nightly",
        "--network",
        "prod-mesh",
        "--strategy",
        str(strategy_file),
        "--channel",
        "Nightly",
        "--days",
        "Sat",
        "--start",
        "02:00",
        "--timezone",
        "Mars/Olympus",
        "--duration",
        "30h",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = err.decode()
    assert process.returncode == 2, stderr
    assert "3 problem(s)" in stderr
    for option in ("--channel", "--timezone", "--duration"):
        assert option in stderr
    assert "Traceback" not in stderr
