"""A member's whole update through the real member workflow, on a worker, against the emulator.

The real ``MemberUpdate`` workflow runs on a real Temporal worker (the session's
dev server) with every activity bound to a :class:`KubernetesBackend` on the
kmock fleet: preflight, drain, control plane through Cluster API, the bundled
Cilium through the HelmChartProxy, verify, restore. Afterwards the recorded
histories and the logs of the run are scanned for secrets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs
from temporalio.client import Client

from activities.backends.kubernetes import ANNOTATION_DRAINED
from engine.domain.plan import VersionPair
from engine.domain.run import (
    MemberOutcome,
    MemberStep,
    MemberUpdateInput,
    MemberUpdateResult,
    RunTimings,
)
from engine.domain.runspec import UpgradeType
from engine.domain.services import ANNOTATION_SERVICE_SHARED
from engine.runtime.worker import build_worker
from tests.kubernetes.emulated_fleet import Fleet, walk_strings
from tests.kubernetes.emulator import ClusterEmulator
from tests.kubernetes.seeds import (
    CAPI_MEMBER,
    FLEET_NAMESPACE,
    MEMBERS,
    VALUES_TEMPLATE,
    cilium_images,
)

CLUSTERS = "cluster.x-k8s.io/v1beta1/clusters"
PROXIES = "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies"
SERVICES = "v1/services"
SECRETS = "v1/secrets"
#: The bundled catalog pairs Kubernetes 1.33 with Cilium 1.17.9 (1.31 with 1.16.16).
FROM = VersionPair(kubernetes_version="1.32.6", cilium_version="1.16.16")
TARGET = VersionPair(kubernetes_version="1.33.2", cilium_version="1.17.9")
FAST = RunTimings(
    control_plane_timeout=dt.timedelta(seconds=20),
    cilium_timeout=dt.timedelta(seconds=20),
    drain_timeout=dt.timedelta(seconds=10),
    poll_interval=dt.timedelta(milliseconds=50),
    heartbeat_timeout=dt.timedelta(seconds=5),
)


def run_cilium(member: ClusterEmulator, management: ClusterEmulator, version: str) -> None:
    """The Cluster API member runs (and its HelmChartProxy installs) Cilium ``version``."""
    images = cilium_images(version)
    member.change(
        "apps/v1/daemonsets",
        "kube-system",
        "cilium",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "cilium-agent", "image": images["agent"]}],
                        "initContainers": [{"name": "config", "image": images["agent"]}],
                    }
                }
            }
        },
    )
    for name, component in (
        ("cilium-operator", "operator"),
        ("clustermesh-apiserver", "apiserver"),
    ):
        deployment = member.obj("apps/v1/deployments", "kube-system", name)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        for container in containers:
            if container["name"] != "etcd":
                container["image"] = images[component]
        member.change(
            "apps/v1/deployments",
            "kube-system",
            name,
            {"spec": {"template": {"spec": {"containers": containers}}}},
        )
    management.change(PROXIES, FLEET_NAMESPACE, "cilium-eu", {"spec": {"version": version}})


def service_annotations(fleet: Fleet) -> dict[tuple[str, str, str], dict[str, str]]:
    """Every Service's annotations on every member."""
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for cluster, emu in fleet.members.items():
        for namespace, name in (("shop", "cart"), ("shop", "checkout"), ("internal", "ledger")):
            obj = emu.obj(SERVICES, namespace, name)
            found[cluster, namespace, name] = dict(obj["metadata"].get("annotations") or {})
    return found


@dataclass
class Timeline:
    """What the member looked like, each time it changed: versions and its Services' sharing."""

    seen: list[tuple[str, str, tuple[str | None, ...], bool]] = field(default_factory=list)

    def phases(self) -> list[tuple[str, str, str]]:
        """Versions with the Services wholly serving as seeded or wholly drained.

        In between (a drain or restore going service by service) is left out. The
        ledger Service is in a namespace that is not global: never drained.
        """
        found: list[tuple[str, str, str]] = []
        for kubernetes, cilium, shared, marked in self.seen:
            if shared == (None, "true", None) and not marked:
                phase = (kubernetes, cilium, "serving")
            elif shared == ("false", "false", None) and marked:
                phase = (kubernetes, cilium, "drained")
            else:
                continue
            if not found or found[-1] != phase:
                found.append(phase)
        return found

    async def watch(self, fleet: Fleet, tick: float = 0.01) -> None:
        member = fleet.members[CAPI_MEMBER]
        while True:
            services = [
                member.obj(SERVICES, ns, name)["metadata"].get("annotations") or {}
                for ns, name in (("shop", "cart"), ("shop", "checkout"), ("internal", "ledger"))
            ]
            cluster = fleet.management.obj(CLUSTERS, FLEET_NAMESPACE, CAPI_MEMBER)
            proxy = fleet.management.obj(PROXIES, FLEET_NAMESPACE, "cilium-eu")
            now = (
                cluster["spec"]["topology"]["version"],
                proxy["spec"]["version"],
                tuple(a.get(ANNOTATION_SERVICE_SHARED) for a in services),
                any(ANNOTATION_DRAINED in a for a in services),
            )
            if not self.seen or self.seen[-1] != now:
                self.seen.append(now)
            await asyncio.sleep(tick)


@contextlib.asynccontextmanager
async def watching(fleet: Fleet) -> AsyncIterator[Timeline]:
    timeline = Timeline()
    task = asyncio.create_task(timeline.watch(fleet))
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def activity_result(history_json: str, activity_type: str) -> Any:
    """The decoded result of the (first completed) activity of that type."""
    events = json.loads(history_json)["events"]
    scheduled = {
        e["eventId"]: e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    }
    for event in events:
        done = event.get("activityTaskCompletedEventAttributes")
        if done and scheduled[done["scheduledEventId"]] == activity_type:
            return json.loads(base64.b64decode(done["result"]["payloads"][0]["data"]))
    raise AssertionError(f"no completed {activity_type}")


def member_input(run: str, timings: RunTimings = FAST) -> MemberUpdateInput:
    return MemberUpdateInput(
        run_id=run,
        network="prod",
        member=CAPI_MEMBER,
        attempt=1,
        upgrade_type=UpgradeType.FULL,
        hops=[TARGET],
        target=TARGET,
        network_members=list(MEMBERS),
        mesh_ready_timeout=dt.timedelta(seconds=10),
        timings=timings,
    )


@contextlib.asynccontextmanager
async def worker(client: Client, task_queue: str, fleet: Fleet) -> AsyncIterator[None]:
    """A real worker with every workflow and activity, on the emulated fleet's backend."""
    async with build_worker(client, task_queue, backend=fleet.backend()):
        yield


async def update(
    client: Client, task_queue: str, member: MemberUpdateInput
) -> tuple[str, MemberUpdateResult]:
    workflow_id = f"updaterun/prod/{member.run_id}/member/{member.member}"
    result = await client.execute_workflow(
        "MemberUpdate",
        member,
        id=workflow_id,
        task_queue=task_queue,
        result_type=MemberUpdateResult,
        execution_timeout=dt.timedelta(seconds=60),
    )
    return workflow_id, result


def steps_run(history_json: str) -> list[str]:
    """The activities the workflow scheduled, in order."""
    events = json.loads(history_json)["events"]
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]


def decoded(value: Any) -> Iterator[str]:
    """Every string in ``value`` and, for base64 ones (payload data), their decoded text."""
    for text in walk_strings(value):
        yield text
        if len(text) >= 8:
            with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                yield base64.b64decode(text, validate=True).decode()


def secret_strings(fleet: Fleet) -> list[str]:
    """What must never leave the clusters: tokens, keys, kubeconfigs, whole Secret values."""
    found = [*fleet.secrets, "BEGIN EC PRIVATE KEY", "current-context"]
    kubeconfig = fleet.kubeconfig.read_text()
    found += [kubeconfig, base64.b64encode(kubeconfig.encode()).decode()]
    emulators = [*fleet.members.values(), fleet.management]
    for emu in emulators:
        for (resource, _, _), obj in list(emu.objects.items()):
            if resource != SECRETS:
                continue
            for value in (obj.raw.get("data") or {}).values():
                found += [value, base64.b64decode(value).decode()]
    return found


def assert_no_secret(fleet: Fleet, texts: list[str]) -> None:
    for secret in secret_strings(fleet):
        leaks = [t for t in texts if secret in t]
        assert leaks == [], f"{secret[:12]!r}... leaked into {leaks[0][:200]!r}"


async def test_a_whole_member_update_runs_through_the_member_workflow(
    fleet: Fleet, client: Client, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_cilium(fleet.members[CAPI_MEMBER], fleet.management, FROM.cilium_version)
    before = service_annotations(fleet)
    fleet.start_controllers()
    caplog.set_level(logging.DEBUG)

    with capture_logs() as logs:
        async with worker(client, task_queue, fleet), watching(fleet) as timeline:
            workflow_id, result = await update(
                client, task_queue, member_input(f"run-ok-{uuid.uuid4().hex[:6]}")
            )
        history = await client.get_workflow_handle(workflow_id).fetch_history()

    assert result.outcome is MemberOutcome.COMPLETED, result.message
    assert result.versions == TARGET
    assert steps_run(history.to_json()) == [
        "preflight_member",
        "drain_member_annotate",
        "drain_member_wait",
        "upgrade_control_plane",
        "upgrade_cilium",
        "verify_member",
        "restore_member_annotations",
        "restore_member_wait",
    ]
    cluster = fleet.management.obj(CLUSTERS, FLEET_NAMESPACE, CAPI_MEMBER)
    assert cluster["spec"]["topology"]["version"] == "v1.33.2"
    proxy = fleet.management.obj(PROXIES, FLEET_NAMESPACE, "cilium-eu")
    assert proxy["spec"]["version"] == "1.17.9"
    assert proxy["spec"]["valuesTemplate"] == VALUES_TEMPLATE
    agent = fleet.members[CAPI_MEMBER].obj("apps/v1/daemonsets", "kube-system", "cilium")
    assert agent["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "quay.io/cilium/cilium:v1.17.9@"
    )
    assert fleet.members[CAPI_MEMBER].git_version == "v1.33.2"
    # Wholly drained before anything moved, restored only after everything did ...
    assert timeline.phases() == [
        ("v1.32.6", "1.16.16", "serving"),
        ("v1.32.6", "1.16.16", "drained"),
        ("v1.33.2", "1.16.16", "drained"),
        ("v1.33.2", "1.17.9", "drained"),
        ("v1.33.2", "1.17.9", "serving"),
    ]
    # ... and exactly: every annotation as before, no meshfleet annotation left behind.
    assert service_annotations(fleet) == before
    preflight = activity_result(history.to_json(), "preflight_member")
    assert preflight["current"] == FROM.model_dump(mode="json", by_alias=True)
    # Verify asked the agents of the member and of its peers (the fake exec, both ways).
    assert {call.cluster for call in fleet.agents.calls} == set(MEMBERS)
    drain = activity_result(history.to_json(), "drain_member_annotate")
    assert sorted((c["namespace"], c["name"], c["previous"]) for c in drain["changes"]) == [
        ("shop", "cart", {ANNOTATION_SERVICE_SHARED: None}),
        ("shop", "checkout", {ANNOTATION_SERVICE_SHARED: "true"}),
    ]
    events = [entry["event"] for entry in logs]
    assert "member.drained" in events
    assert "member.restored" in events
    texts = [*decoded(json.loads(history.to_json())), *walk_strings([dict(e) for e in logs])]
    assert any("service.cilium.io/shared" in t for t in texts)  # payloads were decoded
    assert_no_secret(fleet, [*texts, caplog.text])


async def test_a_stuck_control_plane_upgrade_fails_the_member_clearly(
    fleet: Fleet, client: Client, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_cilium(fleet.members[CAPI_MEMBER], fleet.management, FROM.cilium_version)
    before = service_annotations(fleet)
    fleet.start_controllers(stuck=True)
    timings = FAST.model_copy(update={"control_plane_timeout": dt.timedelta(seconds=1)})
    caplog.set_level(logging.DEBUG)

    with capture_logs() as logs:
        async with worker(client, task_queue, fleet):
            workflow_id, result = await update(
                client, task_queue, member_input(f"run-stuck-{uuid.uuid4().hex[:6]}", timings)
            )
        history = await client.get_workflow_handle(workflow_id).fetch_history()

    assert result.outcome is MemberOutcome.FAILED
    assert result.step is MemberStep.CONTROL_PLANE
    assert result.message is not None
    assert result.message.startswith("ControlPlane failed: ")
    assert "controlPlane upgrade of eu-north-1 to 1.33.2" in result.message
    assert "1/3 machines updated" in result.message  # what it was stuck on
    assert steps_run(history.to_json()) == [
        "preflight_member",
        "drain_member_annotate",
        "drain_member_wait",
        "upgrade_control_plane",
        "restore_member_annotations",
        "restore_member_wait",
    ]
    # Never Cilium after a failed control plane; the services are back as they were.
    proxy = fleet.management.obj(PROXIES, FLEET_NAMESPACE, "cilium-eu")
    assert proxy["spec"]["version"] == FROM.cilium_version
    assert service_annotations(fleet) == before
    texts = [
        *decoded(json.loads(history.to_json())),
        *walk_strings([dict(e) for e in logs]),
        *walk_strings(result.model_dump()),
    ]
    assert any("1/3 machines updated" in t for t in texts)
    assert_no_secret(fleet, [*texts, caplog.text])


async def test_a_target_without_a_patch_is_refused_at_preflight_before_any_drain(
    fleet: Fleet, client: Client, task_queue: str
) -> None:
    run_cilium(fleet.members[CAPI_MEMBER], fleet.management, FROM.cilium_version)
    before = service_annotations(fleet)
    fleet.start_controllers()
    minor_only = VersionPair(kubernetes_version="1.33", cilium_version="1.17.9")
    member = member_input(f"run-minor-{uuid.uuid4().hex[:6]}").model_copy(
        update={"target": minor_only, "hops": [minor_only]}
    )

    async with worker(client, task_queue, fleet):
        workflow_id, result = await update(client, task_queue, member)
    history = await client.get_workflow_handle(workflow_id).fetch_history()

    assert result.outcome is MemberOutcome.FAILED
    assert result.message is not None
    assert "'1.33' has no patch number" in result.message
    assert steps_run(history.to_json()) == ["preflight_member"]  # nothing was touched
    assert service_annotations(fleet) == before
    cluster = fleet.management.obj(CLUSTERS, FLEET_NAMESPACE, CAPI_MEMBER)
    assert cluster["spec"]["topology"]["version"] == f"v{FROM.kubernetes_version}"
