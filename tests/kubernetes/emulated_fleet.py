"""The emulated fleet: three members (one through Cluster API) and a management cluster,
each a kmock API server on loopback, reached by the real client through a real
kubeconfig (with bearer tokens, so tests can check no token leaks)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import yaml

from activities.backends.kubernetes import KubernetesBackend, load_access
from tests.kubernetes.agents import FakeAgents
from tests.kubernetes.controllers import Controllers
from tests.kubernetes.emulator import ClusterEmulator
from tests.kubernetes.seeds import (
    CAPI_MEMBER,
    FLEET_NAMESPACE,
    MEMBERS,
    OFFLINE,
    MemberSpec,
    b64,
    seed_management,
    seed_member,
)


@dataclass
class Fleet:
    """Three members (one through Cluster API), a management cluster, and their secrets."""

    members: dict[str, ClusterEmulator]
    management: ClusterEmulator
    access_file: Path
    kubeconfig: Path
    agents: FakeAgents
    #: Strings that must never appear in an error or a log line.
    secrets: list[str]
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def backend(self) -> KubernetesBackend:
        """A fresh backend, as a (re)started worker would build it."""
        return KubernetesBackend(load_access(self.access_file), pod_exec=self.agents)

    def write_access(self, extra: dict[str, Any]) -> None:
        """Add or replace top-level keys of the access file (the next backend reads them)."""
        access = yaml.safe_load(self.access_file.read_text())
        access.update(extra)
        self.access_file.write_text(yaml.safe_dump(access))

    def start_controllers(self, **options: Any) -> Controllers:
        """Run the emulated controllers for the Cluster API member until the test ends."""
        controllers = Controllers(self.management, self.members[CAPI_MEMBER], **options)
        self._tasks.append(asyncio.create_task(controllers.run()))
        return controllers


def kubeconfig(servers: dict[str, str], tokens: dict[str, str]) -> dict[str, Any]:
    """A kubeconfig with one context per server, each with its own bearer token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": f"{n}-admin", "user": {"token": tokens[n]}} for n in servers],
        "contexts": [{"name": n, "context": {"cluster": n, "user": f"{n}-admin"}} for n in servers],
        "current-context": next(iter(servers)),
    }


@contextlib.asynccontextmanager
async def emulated_fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fresh emulated fleet; every server and controller stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        emulators: dict[str, ClusterEmulator] = {}
        urls: dict[str, str] = {}
        for name in (*MEMBERS, "management"):
            emu = await stack.enter_async_context(ClusterEmulator())
            server = await stack.enter_async_context(kmock.Server(emu))
            emulators[name] = emu
            urls[name] = str(server.url).rstrip("/")
        tokens = {n: f"tok-{n}-{secrets.token_hex(12)}" for n in (*urls, OFFLINE)}
        key_material = f"MHcCAQEEI{secrets.token_hex(16)}"
        capi_kubeconfig = kubeconfig({CAPI_MEMBER: urls[CAPI_MEMBER]}, tokens)
        for spec in (
            MemberSpec("ap-south-1", 3, "10.3.0.0/16", peers=("eu-north-1", "us-east-1")),
            MemberSpec("us-east-1", 9, "10.9.0.0/16", peers=("ap-south-1", "eu-north-1")),
            MemberSpec(
                "eu-north-1",
                4,
                "10.4.0.0/16",
                kubernetes="1.32.6",
                peers=("ap-south-1", "us-east-1"),
            ),
        ):
            seed_member(emulators[spec.name], spec, key_material)
        seed_management(emulators["management"], yaml.safe_dump(capi_kubeconfig))
        direct = {n: urls[n] for n in ("ap-south-1", "us-east-1", "management")}
        direct[OFFLINE] = "http://127.0.0.1:9"  # discard port: nothing listens
        config_path = tmp_path / "kubeconfig"
        config_path.write_text(yaml.safe_dump(kubeconfig(direct, tokens)))
        access_file = tmp_path / "access.yaml"
        access_file.write_text(
            yaml.safe_dump(
                {
                    "kubeconfig": "kubeconfig",
                    "requestTimeout": "5s",
                    "members": [
                        {"name": "ap-south-1", "context": "ap-south-1", "updateGroup": "canary"},
                        {"name": "us-east-1", "context": "us-east-1", "labels": {"env": "prod"}},
                        {"name": OFFLINE, "context": OFFLINE},
                    ],
                    "discover": [
                        {
                            "managementContext": "management",
                            "namespace": FLEET_NAMESPACE,
                            "labelSelector": "meshfleet.io/fleet=test",
                        }
                    ],
                }
            )
        )
        agents = FakeAgents(emulators={n: emulators[n] for n in MEMBERS})
        agents.healthy()
        fleet = Fleet(
            members={n: emulators[n] for n in MEMBERS},
            management=emulators["management"],
            access_file=access_file,
            kubeconfig=config_path,
            agents=agents,
            secrets=[*tokens.values(), key_material, b64(key_material)],
        )
        try:
            yield fleet
        finally:
            for task in fleet._tasks:
                task.cancel()
            for task in fleet._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def walk_strings(value: Any) -> Iterator[str]:
    """Every string inside a nested structure (for secret scans)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from walk_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from walk_strings(item)
    else:
        yield repr(value)
