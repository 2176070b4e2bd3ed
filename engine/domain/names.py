"""Typed identifiers and the naming rules from Fleet and Cilium."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

#: Fleet resource names (strategies, stages, groups, runs, networks).
RESOURCE_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RESOURCE_NAME_MAX = 50

#: Cilium cluster names: <= 32 chars, lowercase alphanumerics and '-', alnum at both ends.
CLUSTER_NAME_PATTERN = RESOURCE_NAME_PATTERN
CLUSTER_NAME_MAX = 32

#: Cilium reserves these names and id 0.
RESERVED_CLUSTER_NAMES = frozenset({"default"})

MAX_NETWORK_MEMBERS = 255
MIN_CLUSTER_ID = 1
MAX_CLUSTER_ID = 255


def resource_name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid Fleet resource name, or None when it is."""
    if not 1 <= len(value) <= RESOURCE_NAME_MAX:
        return f"must be 1 to {RESOURCE_NAME_MAX} characters long (got {len(value)})"
    if not RESOURCE_NAME_PATTERN.match(value):
        return (
            "must be lowercase alphanumerics and '-', starting and ending "
            f"alphanumeric (pattern {RESOURCE_NAME_PATTERN.pattern})"
        )
    return None


def cluster_name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid ClusterMesh cluster name, or None when it is."""
    if not 1 <= len(value) <= CLUSTER_NAME_MAX:
        return f"must be 1 to {CLUSTER_NAME_MAX} characters long (got {len(value)})"
    if not CLUSTER_NAME_PATTERN.match(value):
        return (
            "must be lowercase alphanumerics and '-', starting and ending "
            "alphanumeric (Cilium's cluster-name rule)"
        )
    if value in RESERVED_CLUSTER_NAMES:
        return f"{value!r} is reserved by Cilium"
    return None


def _resource_name(value: str) -> str:
    problem = resource_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _cluster_name(value: str) -> str:
    problem = cluster_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: A pydantic field type for Fleet resource names.
ResourceNameStr = Annotated[str, AfterValidator(_resource_name)]
#: A pydantic field type for cluster (member) names.
ClusterNameStr = Annotated[str, AfterValidator(_cluster_name)]
