"""Running a command in a pod: the backend's one injectable seam.

Reading Cilium's view of the mesh means running ``cilium-dbg status -o json``
inside each agent pod. :class:`PodExec` is what the backend calls for that;
:func:`stream_exec` is the real implementation over the exec API
(``kubernetes.stream``), and tests pass a fake that returns captured output.

Does I/O (websocket exec, in a worker thread).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from kubernetes.client import CoreV1Api
from kubernetes.stream import stream

from activities.backends.kubernetes._api import EXEC_POD, ClusterApi

__all__ = [
    "AGENT_STATUS_COMMAND",
    "SERVICE_LIST_COMMAND",
    "ExecTarget",
    "PodExec",
    "stream_exec",
]

#: What ``cilium clustermesh status`` itself runs in every agent pod.
AGENT_STATUS_COMMAND = ("cilium-dbg", "status", "-o", "json")
#: The agent's service table: what its datapath load-balances each frontend to.
SERVICE_LIST_COMMAND = ("cilium-dbg", "service", "list", "-o", "json")


@dataclass(frozen=True)
class ExecTarget:
    """Which command to run in which container of which pod of which member."""

    cluster: str
    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]


class PodExec(Protocol):
    """Run ``target.command`` and return its standard output."""

    async def __call__(self, api: ClusterApi, target: ExecTarget) -> str: ...


async def stream_exec(api: ClusterApi, target: ExecTarget) -> str:
    """The real :class:`PodExec`: the exec API through ``kubernetes.stream``."""
    api.check(EXEC_POD, "create")

    def blocking() -> str:
        output = stream(
            CoreV1Api(api.api_client).connect_get_namespaced_pod_exec,
            target.pod,
            target.namespace,
            container=target.container,
            command=list(target.command),
            stderr=False,
            stdin=False,
            stdout=True,
            tty=False,
            _request_timeout=60,
        )
        return str(output)

    return await asyncio.to_thread(blocking)
