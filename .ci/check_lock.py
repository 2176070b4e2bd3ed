"""Check that the running venv holds exactly the versions a lock file pins.

Usage: `python .ci/check_lock.py requirements-dev.lock`. Compares the lock's
`name==version` lines whose environment markers apply here with what is
installed (as `pip freeze` sees it: the project itself, pip and setuptools
aside) and exits 1 naming every difference: a missing package, a different
version, or a package the lock does not know.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

# Installed but never locked: the installer itself and the project (installed editable).
NOT_LOCKED = frozenset({"pip", "setuptools", "wheel", "meshfleet"})
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(;(?P<marker>[^\\]+))?"
)


def locked(lock: Path) -> dict[str, str]:
    """The lock's pins that apply to this interpreter and platform, by canonical name."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        marker = match.group("marker")
        if marker and not Marker(marker.strip()).evaluate():
            continue
        pins[canonicalize_name(match.group("name"))] = match.group("version")
    return pins


def installed() -> dict[str, str]:
    """Every distribution in this environment, by canonical name."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if canonicalize_name(dist.metadata["Name"]) not in NOT_LOCKED
    }


def differences(pins: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per package whose installed state differs from the lock."""
    problems = []
    for name in sorted(pins.keys() | present.keys()):
        want, have = pins.get(name), present.get(name)
        if want == have:
            continue
        if have is None:
            problems.append(f"{name}: locked {want}, not installed")
        elif want is None:
            problems.append(f"{name}: installed {have}, not in the lock")
        else:
            problems.append(f"{name}: locked {want}, installed {have}")
    return problems


def main(argv: list[str]) -> int:
    """Compare the venv with the lock file named on the command line."""
    if len(argv) != 1:
        print("usage: check_lock.py LOCKFILE", file=sys.stderr)
        return 2
    lock = Path(argv[0])
    pins = locked(lock)
    problems = differences(pins, installed())
    if problems:
        print(f"the venv does not match {lock}:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"the venv matches {lock}: {len(pins)} locked packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
