"""The Kubernetes fleet backend: real clusters through Cluster API, Cilium and EndpointSlices.

Implements :class:`engine.domain.backend.FleetBackend` over the official
``kubernetes`` client (every request through :class:`~._api.ClusterApi`, so the
calls are declared in one place). The backend is assembled here from its parts,
one job each:

- ``_health`` — describing members, join prerequisites, mesh health;
- ``_operations`` — records of long-running operations and their progress;
- ``_mesh`` — Cilium on the members: mesh configuration and Cilium upgrades;
- ``_services`` — global services, routing and annotations.

Where state must survive a worker crash it is kept on the objects themselves:
the pre-drain annotations on the Service (``engine.domain.drain``), and the
records of long-running operations on the member's Cluster API ``Cluster`` (or
``cilium-config``, see ``_operations``).

Does I/O.
"""

from __future__ import annotations

import asyncio
import collections

from activities.backends.kubernetes._access import ClusterClients, KubernetesAccess
from activities.backends.kubernetes._exec import PodExec, stream_exec
from activities.backends.kubernetes._health import MemberHealth
from activities.backends.kubernetes._mesh import CiliumMesh
from activities.backends.kubernetes._services import MeshServices

__all__ = ["KubernetesBackend"]


class KubernetesBackend(MemberHealth, CiliumMesh, MeshServices):
    """:class:`~engine.domain.backend.FleetBackend` over real clusters.

    ``access`` says how to reach each member (see :func:`load_access`);
    ``pod_exec`` runs ``cilium-dbg`` in agent pods (the exec API by default).
    """

    def __init__(self, access: KubernetesAccess, *, pod_exec: PodExec = stream_exec) -> None:
        self.access = access
        self.clients = ClusterClients(access)
        self._exec = pod_exec
        self._exec_slots = asyncio.Semaphore(access.exec_concurrency)
        self._cidrs = {}
        self._remembered = collections.OrderedDict()
