"""One emulated cluster: a kmock API server that also speaks the exec protocol.

:class:`ClusterEmulator` adds, over :class:`~tests.kubernetes.kmock_patches.PatchedEmulator`,
``pods/{name}/exec`` over websockets (answered by an :data:`ExecHandler`) and
helpers to read and change objects as a controller would.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs

from tests.kubernetes.kmock_patches import PatchedEmulator

RESOURCES = (
    "v1/namespaces",
    "v1/nodes",
    "v1/pods",
    "v1/services",
    "v1/secrets",
    "v1/configmaps",
    "apps/v1/daemonsets",
    "apps/v1/deployments",
    "discovery.k8s.io/v1/endpointslices",
    "cluster.x-k8s.io/v1beta1/clusters",
    "controlplane.cluster.x-k8s.io/v1beta1/kubeadmcontrolplanes",
    "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies",
)


#: What an API server offers for exec, newest first (1.30+ speaks v5).
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


@dataclass(frozen=True)
class ExecReply:
    """What a command run in a pod gives back: its streams and exit code, or it hangs."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    hang: bool = False


#: Answers an exec: ``(pod, container, command) -> reply``.
ExecHandler = Callable[[str, str, tuple[str, ...]], Awaitable[ExecReply]]


@attrs.define(kw_only=True)
class ClusterEmulator(PatchedEmulator):
    """An emulated cluster: kmock's API (see :class:`PatchedEmulator`) plus the exec API."""

    #: Serves ``pods/{name}/exec`` over websockets when set (the Kubernetes exec protocol).
    exec_handler: ExecHandler | None = attrs.field(default=None, init=False)
    exec_protocols: tuple[str, ...] = attrs.field(default=EXEC_PROTOCOLS, init=False)
    #: The subprotocol each exec negotiated, in order (for assertions).
    exec_sessions: list[str] = attrs.field(factory=list, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        upgrade = raw_request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and raw_request.path.endswith("/exec") and self.exec_handler is not None:
            return await self._serve_exec(raw_request, self.exec_handler)
        return await super().__call__(raw_request)

    async def _serve_exec(
        self, raw_request: aiohttp.web.BaseRequest, handler: ExecHandler
    ) -> aiohttp.web.StreamResponse:
        """The exec protocol as the API server speaks it to ``kubernetes.stream``.

        Binary frames prefixed by a channel byte: 1 stdout, 2 stderr, 3 the error
        channel carrying the final ``Status`` (``Success``, or ``Failure`` with
        reason ``NonZeroExitCode`` and the code in ``details.causes``); with
        ``v5.channel.k8s.io`` a close frame (channel 255) per stream before the end.
        """
        ws = aiohttp.web.WebSocketResponse(protocols=self.exec_protocols)
        await ws.prepare(raw_request)
        protocol = ws.ws_protocol or ""
        self.exec_sessions.append(protocol)
        pod = raw_request.path.rstrip("/").split("/")[-2]
        container = raw_request.query.get("container", "")
        command = tuple(raw_request.query.getall("command", []))
        reply = await handler(pod, container, command)
        if reply.hang:
            await ws.receive()  # until the client gives up and closes
            return ws
        if reply.stdout:
            await ws.send_bytes(b"\x01" + reply.stdout.encode())
        if reply.stderr:
            await ws.send_bytes(b"\x02" + reply.stderr.encode())
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        if reply.exit_code:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code {reply.exit_code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(reply.exit_code)}]},
            }
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        if protocol == "v5.channel.k8s.io":
            for channel in (1, 2, 3):
                await ws.send_bytes(bytes([255, channel]))
        await ws.close()
        return ws

    def has(self, resource: str, namespace: str | None, name: str) -> bool:
        """Whether the object exists (kmock's ``in`` needs a parsed resource, not a string)."""
        wanted: tuple[Any, ...] = (resource, namespace, name)
        return wanted in list(self.objects)

    def obj(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        """The current state of an object (a deep copy)."""
        return copy.deepcopy(self.objects[resource, namespace, name].raw)
