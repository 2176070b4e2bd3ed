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

from engine.domain.errors import FieldError, InvalidInputError, field_errors_from_pydantic
from engine.domain.fleet import load_yaml_document, parse_yaml
from engine.domain.model import DomainModel
from engine.domain.versions import Minor, Version, VersionStr

BUNDLED_CATALOG = "release-catalog.yaml"


class Release(DomainModel):
    """One Kubernetes minor and the Cilium version bundled with it."""

    kubernetes: str
    cilium: VersionStr

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
        for release in self.releases:
            if Version.parse(release.kubernetes).minor_version == minor:
                return Version.parse(release.cilium)
        return None

    def known_minors(self) -> list[Minor]:
        """The Kubernetes minors the catalog knows, oldest first (compared as versions)."""
        return sorted(Version.parse(r.kubernetes).minor_version for r in self.releases)


def parse_catalog(document: object, source: str | None = None) -> ReleaseCatalog:
    """Validate a parsed catalog document; every problem at once as InvalidInputError."""
    try:
        return ReleaseCatalog.model_validate(document)
    except ValidationError as error:
        raise InvalidInputError(field_errors_from_pydantic(error), source=source) from None


def bundled_catalog() -> ReleaseCatalog:
    """The catalog shipped inside the package."""
    text = resources.files("strategies").joinpath("data", BUNDLED_CATALOG).read_text("utf-8")
    return parse_catalog(parse_yaml(text), source=BUNDLED_CATALOG)


def load_catalog(path: Path | None = None) -> ReleaseCatalog:
    """The user's catalog file when given, else the bundled one."""
    if path is None:
        return bundled_catalog()
    document = load_yaml_document(path)
    if not isinstance(document, dict):
        raise InvalidInputError(
            [FieldError(path="", message="a catalog must be a mapping with 'releases'")],
            source=str(path),
        )
    return parse_catalog(document, source=str(path))
