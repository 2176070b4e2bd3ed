"""The access file, the declared API calls, and the promise that no secret ever leaks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from activities.backends.kubernetes import (
    API_CALLS,
    CiliumManagement,
    Scope,
    load_access,
    open_kubernetes_backend,
    rbac_rules,
)
from activities.backends.kubernetes._api import ClusterApi
from engine.domain.errors import InvalidInputError
from engine.domain.services import ANNOTATION_SERVICE_SHARED
from tests.kubernetes.emulated_fleet import Fleet, walk_strings
from tests.kubernetes.seeds import CAPI_MEMBER, FLEET_NAMESPACE, MEMBERS, OFFLINE, b64


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "access.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_access_file_problems_are_reported_with_their_field_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "members": [
                {"name": "a", "context": "a", "clusterAPI": {"managementContext": "m"}},
                {"name": "b"},
                {"name": "c", "context": "c", "cilium": "kops"},
            ],
            "discover": [{"managementContext": "m"}],
            "requestTimeout": "soon",
        },
    )

    with pytest.raises(InvalidInputError) as raised:
        load_access(path)

    paths = {e.path for e in raised.value.errors}
    assert {
        "members[0].clusterAPI.namespace",
        "members[0].clusterAPI.cluster",
        "members[1]",
        "members[2].cilium",
        "discover[0].labelSelector",
        "requestTimeout",
    } <= paths


def test_contexts_must_exist_in_the_kubeconfig(tmp_path: Path, fleet: Fleet) -> None:
    path = write(
        tmp_path,
        {
            "kubeconfig": str(fleet.kubeconfig),
            "members": [
                {"name": "a", "context": "ap-south-1"},
                {"name": "z", "context": "zz-top"},
            ],
            "discover": [{"managementContext": "mgmt", "labelSelector": "x=y"}],
        },
    )

    with pytest.raises(InvalidInputError) as raised:
        load_access(path)

    assert [(e.path, e.message) for e in raised.value.errors] == [
        ("members[1].context", f"context 'zz-top' is not in {fleet.kubeconfig}"),
        ("discover[0].managementContext", f"context 'mgmt' is not in {fleet.kubeconfig}"),
    ]


def test_invalid_yaml_is_reported_without_quoting_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "members:\n  - name: a\n    token: hunter2-secret\n   bad: [\n")

    with pytest.raises(InvalidInputError) as raised:
        load_access(path)

    assert "not valid YAML at line" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_valid_access_file_opens_a_backend(fleet: Fleet) -> None:
    backend = open_kubernetes_backend(fleet.access_file)

    assert [m.name for m in backend.access.members] == ["ap-south-1", "us-east-1", OFFLINE]
    assert backend.access.discover[0].cilium is CiliumManagement.AUTO
    assert backend.access.kubeconfig == fleet.kubeconfig


def test_every_api_call_is_declared_with_its_scope_group_resource_and_verb() -> None:
    """The RBAC a worker needs comes from the declarations the code calls through."""
    member = dict(((g, r), v) for g, r, v in rbac_rules(Scope.MEMBER))
    management = dict(((g, r), v) for g, r, v in rbac_rules(Scope.MANAGEMENT))

    assert member[("", "services")] == ("get", "list", "patch")
    assert member[("", "pods/exec")] == ("create", "get")
    assert member[("discovery.k8s.io", "endpointslices")] == ("list",)
    assert member[("", "secrets")] == ("get", "patch")  # patch: connection Secrets mode only
    assert management[("cluster.x-k8s.io", "clusters")] == ("get", "list", "patch")
    assert management[("addons.cluster.x-k8s.io", "helmchartproxies")] == ("get", "list", "patch")
    assert management[("", "secrets")] == ("get",)
    assert len(set(API_CALLS)) == len(API_CALLS)


async def test_an_undeclared_call_is_refused(fleet: Fleet) -> None:
    backend = fleet.backend()
    api: ClusterApi = await backend.clients.member("us-east-1")
    undeclared = API_CALLS[0]._replace(resource="clusterroles", group="rbac.authorization.k8s.io")

    with pytest.raises(AssertionError, match="undeclared"):
        await api.get(undeclared, "admin")


async def test_no_token_key_or_kubeconfig_appears_in_errors_or_logs(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """Exercise reads, writes and failures; scan every answer, error and log line."""
    # A kubeconfig Secret that is not one, for an extra Cluster API member.
    fleet.management.objects["v1/secrets", FLEET_NAMESPACE, "broken-kubeconfig"] = {
        "metadata": {"name": "broken-kubeconfig", "namespace": FLEET_NAMESPACE},
        "data": {"value": b64(f"token: {fleet.secrets[0]}\n: [unclosed")},
    }
    fleet.write_access(
        {
            "members": [
                *yaml.safe_load(fleet.access_file.read_text())["members"],
                {
                    "name": "broken",
                    "clusterAPI": {
                        "managementContext": "management",
                        "namespace": FLEET_NAMESPACE,
                        "cluster": "broken",
                    },
                },
            ]
        }
    )
    fleet.start_controllers()
    backend = fleet.backend()
    seen: list[object] = []
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        structlog.get_logger("test").info("scan.start")
        seen.append(await backend.describe_member(CAPI_MEMBER))
        seen.append(await backend.describe_member(OFFLINE))
        seen.append(await backend.mesh_health([*MEMBERS, OFFLINE]))
        seen.append(await backend.list_global_services(list(MEMBERS)))
        seen.append(
            await backend.set_service_annotations(
                CAPI_MEMBER,
                "shop",
                "cart",
                {ANNOTATION_SERVICE_SHARED: "false"},
                idempotency_key="k",
            )
        )
        seen.append(await backend.start_cilium_upgrade(CAPI_MEMBER, "1.18.6", idempotency_key="c"))
        for call in (
            backend.describe_member("broken"),
            backend.start_control_plane_upgrade(OFFLINE, "1.34.1", idempotency_key="x"),
            backend.enable_mesh(OFFLINE, network="prod", idempotency_key="y"),
            backend.connect_peers("us-east-1", ["nowhere"], idempotency_key="z"),
            backend.start_cilium_upgrade("ap-south-1", "1.18.6", idempotency_key="w"),
        ):
            with pytest.raises(Exception) as raised:  # noqa: PT011 - every failure is scanned
                await call
            seen.append(str(raised.value))
            seen.append(repr(raised.value))
            seen.append(str(raised.value.__cause__))
    texts = [
        *walk_strings([m.model_dump() if hasattr(m, "model_dump") else m for m in seen]),
        *walk_strings([dict(entry) for entry in logs]),
        caplog.text,
    ]

    assert len(logs) > 5
    assert any("broken-kubeconfig" in t for t in texts)  # the failure was reported ...
    for secret in [*fleet.secrets, "current-context", "BEGIN EC PRIVATE KEY"]:
        leaks = [t for t in texts if secret in t]
        assert leaks == [], f"{secret[:8]}... leaked"
