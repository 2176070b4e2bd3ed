"""The Kubernetes fleet backend: real clusters through Cluster API and Cilium.

Public surface:

- :func:`open_kubernetes_backend` — what ``meshfleet worker --backend kubernetes
  --access FILE`` calls: read the access file, return the backend.
- :class:`KubernetesBackend` — the :class:`~engine.domain.backend.FleetBackend`.
- :class:`KubernetesAccess` / :func:`load_access` — the access file.
- :data:`API_CALLS` / :func:`rbac_rules` — every API call the backend makes
  (the source of the worker's RBAC; :mod:`.rbac` generates the manifests, ``make rbac``).
- :class:`PodExec` / :class:`ExecTarget` / :func:`stream_exec` — the exec seam.

Does I/O (Kubernetes API calls, kubeconfig files).
"""

from __future__ import annotations

from pathlib import Path

from activities.backends.kubernetes._access import (
    CiliumManagement,
    ClusterApiRef,
    Discovery,
    KubernetesAccess,
    MemberAccess,
    MeshConfig,
    load_access,
)
from activities.backends.kubernetes._api import (
    API_CALLS,
    ApiCall,
    KubernetesAccessError,
    KubernetesApiError,
    Scope,
    rbac_rules,
)
from activities.backends.kubernetes._backend import KubernetesBackend
from activities.backends.kubernetes._base import LABEL_NETWORK
from activities.backends.kubernetes._exec import ExecTarget, PodExec, stream_exec
from activities.backends.kubernetes._mesh import CiliumUpgradeNotPossibleError
from activities.backends.kubernetes._operations import (
    ANNOTATION_OPERATIONS,
    ControlPlaneUpgradeNotPossibleError,
)
from activities.backends.kubernetes._services import ANNOTATION_MIN_READY_ENDPOINTS
from engine.domain.drain import ANNOTATION_DRAINED

__all__ = [
    "ANNOTATION_DRAINED",
    "ANNOTATION_MIN_READY_ENDPOINTS",
    "ANNOTATION_OPERATIONS",
    "API_CALLS",
    "LABEL_NETWORK",
    "ApiCall",
    "CiliumManagement",
    "CiliumUpgradeNotPossibleError",
    "ClusterApiRef",
    "ControlPlaneUpgradeNotPossibleError",
    "Discovery",
    "ExecTarget",
    "KubernetesAccess",
    "KubernetesAccessError",
    "KubernetesApiError",
    "KubernetesBackend",
    "MemberAccess",
    "MeshConfig",
    "PodExec",
    "Scope",
    "load_access",
    "open_kubernetes_backend",
    "rbac_rules",
    "stream_exec",
]


def open_kubernetes_backend(access_file: Path) -> KubernetesBackend:
    """Read ``access_file`` (raising InvalidInputError with field paths) and build the backend."""
    return KubernetesBackend(load_access(access_file))
