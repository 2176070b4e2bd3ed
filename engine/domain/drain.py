"""The drain record: how a drain remembers, on the Service itself, what it replaced.

A drain sets ``service.cilium.io/shared: "false"`` and, in the same write,
records what the changed annotations were before in an annotation of
meshfleet's own on the same Service (:data:`ANNOTATION_DRAINED`). The record
lives with the object, so a restore from a new worker (after a crash, a
retried activity, or a retried member whose drain runs under a new key) puts
back exactly what was there before the *first* drain; the restore removes both.

Every backend applies annotation changes through :func:`plan_annotations`
(the Kubernetes backend as one merge patch, the simulated one in its world),
so both keep the same record with the same rules.

Purely data-manipulative: computes changes, does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field, ValidationError

from engine.domain.model import DomainModel
from engine.domain.services import ANNOTATION_SERVICE_SHARED

__all__ = ["ANNOTATION_DRAINED", "AnnotationPlan", "PreDrainAnnotations", "plan_annotations"]

#: Service annotation: JSON :class:`PreDrainAnnotations`, present exactly while drained.
ANNOTATION_DRAINED = "meshfleet.io/drained-annotations"


class PreDrainAnnotations(DomainModel):
    """What the drained annotations were before the first drain, and which keys drained it."""

    keys: list[str] = Field(default_factory=list)
    previous: dict[str, str | None] = Field(default_factory=dict)

    @classmethod
    def read(cls, annotations: Mapping[str, str]) -> PreDrainAnnotations | None:
        """The record on a Service, or None (an unreadable record is treated as absent)."""
        text = annotations.get(ANNOTATION_DRAINED)
        if text is None:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return None

    def dump(self) -> str:
        """The record as the annotation's value (compact, stable JSON)."""
        return json.dumps(self.model_dump(by_alias=True), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class AnnotationPlan:
    """The merge patch for ``metadata.annotations`` and the change it makes, as reported."""

    patch: dict[str, str | None]
    previous: dict[str, str | None]
    current: dict[str, str | None]


def plan_annotations(
    annotations: Mapping[str, str], changes: Mapping[str, str | None], key: str
) -> AnnotationPlan:
    """How to apply ``changes`` to a Service whose annotations are ``annotations``.

    - A drain (``shared: "false"``) records the previous values (the first drain's
      record is kept when drained twice, so the restore goes back to the origin).
    - A retried drain (same ``key``) reports the recorded previous values again.
    - A restore (``shared`` set to anything else, or removed) while a record
      exists applies the record's values (they win over the caller's: they were
      captured atomically with the drain) and removes the record.
    - Anything else is a plain set/remove.
    """
    record = PreDrainAnnotations.read(annotations)
    draining = changes.get(ANNOTATION_SERVICE_SHARED) == "false"
    wanted = dict(changes)
    if draining:
        if record is not None and key in record.keys:
            previous = {k: record.previous.get(k, annotations.get(k)) for k in wanted}
            return AnnotationPlan(patch=wanted, previous=previous, current=wanted)
        if record is None:
            record = PreDrainAnnotations()
        for name in wanted:
            record.previous.setdefault(name, annotations.get(name))
        record.keys.append(key)
        previous = {k: record.previous[k] for k in wanted}
        patch: dict[str, str | None] = {**wanted, ANNOTATION_DRAINED: record.dump()}
        return AnnotationPlan(patch=patch, previous=previous, current=wanted)
    if record is not None and ANNOTATION_SERVICE_SHARED in wanted:
        wanted.update(record.previous)
        previous = {k: annotations.get(k) for k in wanted}
        return AnnotationPlan(
            patch={**wanted, ANNOTATION_DRAINED: None}, previous=previous, current=wanted
        )
    previous = {k: annotations.get(k) for k in wanted}
    return AnnotationPlan(patch=wanted, previous=previous, current=wanted)
