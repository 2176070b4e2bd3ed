"""The release catalog: which Cilium version each Kubernetes minor bundles.

Kept as data (``strategies/data/release-catalog.yaml``), overridable by a
user file of the same shape. Reading the bundled file is the only I/O here;
``load_catalog`` reads a file only when the caller names one.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from engine.domain.documents import parse_yaml
from engine.domain.errors import FieldError, InvalidInputError, field_errors_from_pydantic
from engine.domain.model import DomainModel
from engine.domain.versions import Minor, Version, VersionStr
from strategies.files import read_document

BUNDLED_CATALOG = "release-catalog.yaml"


class Release(DomainModel):
    """One Kubernetes minor, the Cilium version bundled with it, and its latest patch.

    Kubernetes publishes patches of a minor in sequence, so ``latestPatch: 6``
    means 1.33.0 to 1.33.6 exist. Without it the catalog knows no patches of
    the minor: any patch is accepted and a target without one stays as written.
    """

    kubernetes: str
    cilium: VersionStr
    latest_patch: int | None = Field(default=None, ge=0)

    @field_validator("kubernetes")
    @classmethod
    def _minor_only(cls, value: str) -> str:
        version = Version.parse(value)
        if version.patch is not None:
            raise ValueError("must be a minor like '1.33' (patches share the minor's Cilium)")
        return str(version)


class ReleaseCatalog(DomainModel):
    """Kubernetes minor -> bundled Cilium version."""

    api_version: Literal["meshfleet.io/v1alpha1"] = "meshfleet.io/v1alpha1"
    kind: Literal["ReleaseCatalog"] = "ReleaseCatalog"
    releases: list[Release] = Field(min_length=1)

    @field_validator("releases")
    @classmethod
    def _unique(cls, releases: list[Release]) -> list[Release]:
        seen: set[str] = set()
        for release in releases:
            if release.kubernetes in seen:
                raise ValueError(f"Kubernetes {release.kubernetes} is listed twice")
            seen.add(release.kubernetes)
        return releases

    def cilium_for(self, minor: Minor) -> Version | None:
        """The Cilium version bundled with Kubernetes ``minor`` (None when unknown)."""
        release = self.release_for(minor)
        return None if release is None else Version.parse(release.cilium)

    def release_for(self, minor: Minor) -> Release | None:
        """The catalog's entry for Kubernetes ``minor`` (None when unknown)."""
        for release in self.releases:
            if Version.parse(release.kubernetes).minor_version == minor:
                return release
        return None

    def latest_patch(self, minor: Minor) -> Version | None:
        """``minor``'s latest known patch as a concrete version (None when none is known)."""
        release = self.release_for(minor)
        if release is None or release.latest_patch is None:
            return None
        return Version(minor.major, minor.minor, release.latest_patch)

    def resolve(self, version: Version) -> Version:
        """A version without a patch as the minor's latest known patch; others unchanged."""
        if version.patch is not None:
            return version
        return self.latest_patch(version.minor_version) or version

    def target_problem(self, target: Version) -> str | None:
        """Why the catalog cannot take a run to ``target`` (None when it can)."""
        release = self.release_for(target.minor_version)
        if release is None:
            minors = self.known_minors()
            return (
                f"the release catalog has no Kubernetes {target.minor_version} "
                f"(it knows {minors[0]} to {minors[-1]})"
            )
        latest = release.latest_patch
        if target.patch is not None and latest is not None and target.patch > latest:
            return (
                f"Kubernetes {target} is not a known release: the latest known patch of "
                f"{target.minor_version} is {target.minor_version}.{latest} "
                "(a newer one needs a catalog that lists it: --catalog FILE)"
            )
        return None

    def known_minors(self) -> list[Minor]:
        """The Kubernetes minors the catalog knows, oldest first (compared as versions)."""
        return sorted(Version.parse(r.kubernetes).minor_version for r in self.releases)


def parse_catalog(document: object, source: str | None = None) -> ReleaseCatalog:
    """Validate a parsed catalog document; every problem at once as InvalidInputError."""
    try:
        return ReleaseCatalog.model_validate(document)
    except ValidationError as error:
        raise InvalidInputError(
            field_errors_from_pydantic(error, model=ReleaseCatalog), source=source
        ) from None


def bundled_catalog() -> ReleaseCatalog:
    """The catalog shipped inside the package."""
    text = resources.files("strategies").joinpath("data", BUNDLED_CATALOG).read_text("utf-8")
    return parse_catalog(parse_yaml(text), source=BUNDLED_CATALOG)


def load_catalog(path: Path | None = None) -> ReleaseCatalog:
    """The user's catalog file when given, else the bundled one."""
    if path is None:
        return bundled_catalog()
    document = read_document(path)
    if not isinstance(document, dict):
        raise InvalidInputError(
            [FieldError(path="", message="a catalog must be a mapping with 'releases'")],
            source=str(path),
        )
    return parse_catalog(document, source=str(path))
