"""Kubernetes and Cilium versions, compared as versions, not strings."""

from __future__ import annotations

import re
from functools import total_ordering
from typing import Annotated, NamedTuple

from pydantic import AfterValidator

_VERSION = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?$")

#: The oldest Kubernetes minor a mesh member may run (from the seed document).
MIN_MEMBER_KUBERNETES = (1, 32)


class Minor(NamedTuple):
    """A major.minor pair: the unit the control plane moves by."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def next(self) -> Minor:
        """The following minor (1.33 after 1.32)."""
        return Minor(self.major, self.minor + 1)


@total_ordering
class Version:
    """A ``major.minor[.patch]`` version; a missing patch sorts before ``.0``."""

    __slots__ = ("major", "minor", "patch")

    def __init__(self, major: int, minor: int, patch: int | None = None) -> None:
        self.major = major
        self.minor = minor
        self.patch = patch

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``1.32``, ``1.32.6`` or ``v1.32.6``; raise ValueError otherwise."""
        match = _VERSION.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a version of the form MAJOR.MINOR[.PATCH]")
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch) if patch is not None else None)

    @property
    def minor_version(self) -> Minor:
        return Minor(self.major, self.minor)

    def _key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, -1 if self.patch is None else self.patch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}"
        return base if self.patch is None else f"{base}.{self.patch}"

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"


def _version_str(value: str) -> str:
    Version.parse(value)
    return value.lstrip("v")


#: A pydantic field type: a version string, checked when parsed.
VersionStr = Annotated[str, AfterValidator(_version_str)]
