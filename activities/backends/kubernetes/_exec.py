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
from kubernetes.stream.ws_client import STDERR_CHANNEL, STDOUT_CHANNEL

from activities.backends.kubernetes._api import EXEC_POD, ClusterApi
from engine.domain.errors import MeshfleetError, Retry, UnavailableError

__all__ = [
    "AGENT_STATUS_COMMAND",
    "SERVICE_LIST_COMMAND",
    "ExecFailedError",
    "ExecTarget",
    "ExecTimedOutError",
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


class ExecFailedError(MeshfleetError):
    """The command ran and exited non-zero (the exec protocol's ``NonZeroExitCode``)."""

    retry = Retry.NON_RETRYABLE

    def __init__(self, target: ExecTarget, exit_code: int, stderr: str) -> None:
        self.exit_code = exit_code
        first = stderr.strip().splitlines()[0][:160] if stderr.strip() else ""
        super().__init__(
            f"cluster {target.cluster!r}: {' '.join(target.command)} in pod "
            f"{target.namespace}/{target.pod} exited with code {exit_code}"
            + (f": {first}" if first else "")
        )


class ExecTimedOutError(UnavailableError):
    """The command did not finish in time (retryable: the agent may be busy)."""

    retry = Retry.RETRYABLE


async def stream_exec(api: ClusterApi, target: ExecTarget) -> str:
    """The real :class:`PodExec`: the exec API through ``kubernetes.stream``.

    Speaks ``v5.channel.k8s.io`` (or ``v4``) over a websocket; reads stdout,
    stderr and the error channel's final ``Status``. A non-zero exit raises
    :class:`ExecFailedError`; a command still running after the API request
    timeout is abandoned (the socket closed) and raises :class:`ExecTimedOutError`.
    """
    api.check(EXEC_POD, "create", namespace=target.namespace)
    timeout = api.request_timeout

    def blocking() -> str:
        client = stream(
            CoreV1Api(api.api_client).connect_get_namespaced_pod_exec,
            target.pod,
            target.namespace,
            container=target.container,
            command=list(target.command),
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        try:
            client.run_forever(timeout=timeout)
            if client.is_open():
                raise ExecTimedOutError(
                    f"cluster {target.cluster!r}: {' '.join(target.command)} in pod "
                    f"{target.namespace}/{target.pod} did not finish within {timeout:g}s"
                )
            stdout = str(client.read_channel(STDOUT_CHANNEL))
            stderr = str(client.read_channel(STDERR_CHANNEL))
            code = client.returncode
        finally:
            client.close()
        if code:
            raise ExecFailedError(target, int(code), stderr)
        return stdout

    return await asyncio.to_thread(blocking)
