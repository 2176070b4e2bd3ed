"""Draining and restoring a Service's mesh annotations so a restore is exact after any crash.

The rules live in :mod:`engine.domain.drain` (the simulated backend keeps the
same record, :class:`~engine.domain.drain.PreDrainAnnotations`); this module is
where the Kubernetes backend takes them from.
"""

from __future__ import annotations

from engine.domain.drain import ANNOTATION_DRAINED, plan_annotations

__all__ = ["ANNOTATION_DRAINED", "plan_annotations"]
