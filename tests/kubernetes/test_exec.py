"""The real exec path: ``kubernetes.stream`` against a server speaking the exec protocol.

The emulated members serve ``pods/{name}/exec`` as websockets with the
``v5.channel.k8s.io``/``v4.channel.k8s.io`` subprotocols (stdout, stderr, the
error channel with the final Status), so :func:`stream_exec` and the backend run
end to end, with no fake exec in between.
"""

from __future__ import annotations

import time

import pytest

from activities.backends.kubernetes import ExecTarget, KubernetesBackend, load_access
from activities.backends.kubernetes._exec import (
    AGENT_STATUS_COMMAND,
    ExecFailedError,
    ExecTimedOutError,
    stream_exec,
)
from tests.kubernetes.emulated_fleet import Fleet
from tests.kubernetes.emulator import ExecReply

MEMBER = "ap-south-1"


def serve_agents(fleet: Fleet) -> None:
    """Every member's pods answer as the fake agents would, over the exec protocol."""
    for name, emu in fleet.members.items():

        async def answer(
            pod: str, container: str, command: tuple[str, ...], cluster: str = name
        ) -> ExecReply:
            target = ExecTarget(cluster, "kube-system", pod, container, command)
            return ExecReply(stdout=await fleet.agents(None, target))  # type: ignore[arg-type]

        emu.exec_handler = answer


def target(command: tuple[str, ...] = AGENT_STATUS_COMMAND) -> ExecTarget:
    return ExecTarget(MEMBER, "kube-system", f"cilium-{MEMBER}-0", "cilium-agent", command)


def real_backend(fleet: Fleet) -> KubernetesBackend:
    """A backend with the real exec (no fake in between)."""
    return KubernetesBackend(load_access(fleet.access_file))


async def test_mesh_health_reads_every_agent_through_the_real_exec_protocol(
    fleet: Fleet,
) -> None:
    serve_agents(fleet)

    links = await real_backend(fleet).not_ready_links(list(fleet.members))

    assert links == []
    assert len(fleet.agents.calls) == 6  # two agent pods per member, each asked once
    assert set(fleet.members[MEMBER].exec_sessions) == {"v5.channel.k8s.io"}


async def test_a_server_speaking_only_v4_is_read_the_same(fleet: Fleet) -> None:
    serve_agents(fleet)
    fleet.members[MEMBER].exec_protocols = ("v4.channel.k8s.io",)
    api = await real_backend(fleet).clients.member(MEMBER)

    output = await stream_exec(api, target())

    assert '"cluster-mesh"' in output
    assert fleet.members[MEMBER].exec_sessions == ["v4.channel.k8s.io"]


async def test_stdout_and_stderr_are_kept_apart(fleet: Fleet) -> None:
    async def noisy(pod: str, container: str, command: tuple[str, ...]) -> ExecReply:
        return ExecReply(stdout='{"ok": true}', stderr="level=warning msg=slow")

    fleet.members[MEMBER].exec_handler = noisy
    api = await real_backend(fleet).clients.member(MEMBER)

    assert await stream_exec(api, target()) == '{"ok": true}'


async def test_a_command_that_fails_raises_with_its_exit_code(fleet: Fleet) -> None:
    async def failing(pod: str, container: str, command: tuple[str, ...]) -> ExecReply:
        return ExecReply(stderr="Error: cannot connect to the Cilium API\n", exit_code=1)

    fleet.members[MEMBER].exec_handler = failing
    backend = real_backend(fleet)
    api = await backend.clients.member(MEMBER)

    with pytest.raises(ExecFailedError, match="exited with code 1: Error: cannot connect") as error:
        await stream_exec(api, target())
    assert error.value.exit_code == 1
    view = (await backend.mesh_health(list(fleet.members))).view(MEMBER)
    assert view is not None
    assert view.error == "agent pod cilium-ap-south-1-0: cilium-dbg status failed (ExecFailedError)"


async def test_a_command_that_hangs_is_abandoned_after_the_request_timeout(
    fleet: Fleet,
) -> None:
    async def hanging(pod: str, container: str, command: tuple[str, ...]) -> ExecReply:
        return ExecReply(hang=True)

    fleet.members[MEMBER].exec_handler = hanging
    fleet.write_access({"requestTimeout": "1s"})
    api = await real_backend(fleet).clients.member(MEMBER)

    started = time.monotonic()
    with pytest.raises(ExecTimedOutError, match="did not finish within 1s"):
        await stream_exec(api, target())
    assert time.monotonic() - started < 10  # the request timeout, not the exec's own
