"""What every part of the Kubernetes backend shares: its state, and the Cilium agents' names.

:class:`BackendState` declares the attributes :class:`~._backend.KubernetesBackend`
sets up (one place builds them); the parts (``_health``, ``_operations``,
``_mesh``, ``_services``) are mixins over it.

No I/O here.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import Sequence

from activities.backends.kubernetes._access import ClusterClients, KubernetesAccess
from activities.backends.kubernetes._api import KubeObject
from activities.backends.kubernetes._exec import PodExec
from activities.backends.kubernetes._objects import meta
from engine.domain.services import AnnotationChange

#: Label selector and container of the Cilium agent pods (``cilium-dbg`` runs there).
AGENT_SELECTOR = "k8s-app=cilium"
AGENT_CONTAINER = "cilium-agent"
#: ``cilium-config`` label: the network ``enable_mesh`` recorded.
LABEL_NETWORK = "meshfleet.io/network"


class BackendState:
    """The state the backend's parts share (built by ``KubernetesBackend.__init__``)."""

    access: KubernetesAccess
    clients: ClusterClients
    #: Runs a command in a pod (``cilium-dbg``); the exec API unless a test injects one.
    _exec: PodExec
    #: Bounds the execs of one poll across all members (the per-poll budget).
    _exec_slots: asyncio.Semaphore
    #: The pod CIDRs last read per member (kept while it is unreachable).
    _cidrs: dict[str, list[str]]
    #: key -> (what was asked, what was answered): same-process retries of mutations.
    _remembered: collections.OrderedDict[str, tuple[str, AnnotationChange]]


def now() -> dt.datetime:
    """The current time, in UTC (what operation records and health reports carry)."""
    return dt.datetime.now(dt.UTC)


def running_agents(pods: Sequence[KubeObject]) -> list[str]:
    """Names of the running, not terminating, Cilium agent pods."""
    return sorted(
        str(p["metadata"]["name"])
        for p in pods
        if meta(p, "labels").get("k8s-app") == "cilium"
        and (p.get("status") or {}).get("phase") == "Running"
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    )
