"""deploy/kubernetes: every object is valid for its kind, and the worker is wired the way it runs.

The kustomizations are rendered by ``tests.deploy.kube.render`` (checked
against ``kubectl kustomize`` where kubectl is installed) and every object,
rendered or plain, goes through the official client's model for its kind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.backends.kubernetes import load_access
from engine.runtime.worker import GRACEFUL_SHUTDOWN
from tests.deploy.conftest import KUBERNETES, REPO
from tests.deploy.kube import Obj, check_object, documents, key, render

BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "kubernetes-backend"
KUSTOMIZATIONS = [BASE, OVERLAY]
PLAIN_MANIFESTS = [KUBERNETES / "member-rbac.yaml", KUBERNETES / "temporal-secret.example.yaml"]


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker_container(objects: list[Obj]) -> Obj:
    pod = one(objects, "Deployment", "meshfleet-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_every_rendered_object_is_valid_for_its_kind(directory: Path) -> None:
    """Each object deserializes into its client model and back without losing a field."""
    objects = render(directory)
    assert objects
    for obj in objects:
        check_object(obj)
    assert len({key(o) for o in objects}) == len(objects), "an object is defined twice"


@pytest.mark.parametrize("path", PLAIN_MANIFESTS, ids=lambda p: p.name)
def test_every_plain_manifest_is_valid_for_its_kind(path: Path) -> None:
    """The member RBAC and the example Secret are complete objects too."""
    for obj in documents(path):
        check_object(obj)


def test_every_yaml_file_under_deploy_kubernetes_is_used_and_parses() -> None:
    """No stray manifest: each file is a kustomization, listed by one, or a plain manifest."""
    listed = set(PLAIN_MANIFESTS)
    for directory in KUSTOMIZATIONS:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed.add(directory / "kustomization.yaml")
        listed |= {directory / r for r in spec.get("resources", []) if not r.startswith("..")}
        listed |= {directory / p["path"] for p in spec.get("patches", [])}
        for generator in spec.get("configMapGenerator", []):
            listed |= {directory / f for f in generator["files"]}
    on_disk = {p for p in KUBERNETES.rglob("*") if p.is_file()}
    assert on_disk == listed
    for path in on_disk:
        if path.suffix == ".yaml":
            documents(path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_the_renderer_agrees_with_kubectl_kustomize(directory: Path) -> None:
    """Same objects as the real kustomize (generated names compared without their hash)."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout

    def unhashed(objects: list[Any]) -> list[Any]:
        text = yaml.safe_dump(sorted(objects, key=key), sort_keys=True)
        return list(yaml.safe_load_all(re.sub(r"(meshfleet-access)-[a-z0-9]{10}", r"\1", text)))

    expected = unhashed([o for o in yaml.safe_load_all(built) if o])
    assert unhashed(render(directory)) == expected


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_the_worker_deployment_is_production_shaped(directory: Path) -> None:
    """Resources, probes on the health port, non-root, and time to finish activities."""
    objects = render(directory)
    deployment = one(objects, "Deployment", "meshfleet-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(objects)
    assert container["image"] == f"meshfleet:{project_version()}"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    args = container["args"]
    port = int(args[args.index("--health-port") + 1])
    metrics = int(args[args.index("--metrics-port") + 1])
    assert container["ports"] == [
        {"name": "health", "containerPort": port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": metrics, "protocol": "TCP"},
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
        assert container[probe]["httpGet"]["path"] in ("/healthz", "/readyz")
    # SIGTERM gives activities the worker's graceful shutdown; the pod must outlast it.
    assert pod["terminationGracePeriodSeconds"] > GRACEFUL_SHUTDOWN.total_seconds() + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["envFrom"] == [{"secretRef": {"name": "meshfleet-temporal"}}]
    budget = one(objects, "PodDisruptionBudget", "meshfleet-worker")
    assert budget["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert (
        deployment["spec"]["selector"]["matchLabels"] == budget["spec"]["selector"]["matchLabels"]
    )
    job = one(objects, "Job", "meshfleet-setup")
    setup = job["spec"]["template"]["spec"]["containers"][0]
    assert setup["command"] == ["meshfleet", "setup"]
    assert setup["image"] == container["image"]


def test_the_base_runs_one_simulated_worker_without_kubernetes_access() -> None:
    """A simulated world is a file: one replica; no token, no RBAC."""
    objects = render(BASE)
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    assert "--backend" in worker_container(objects)["args"]
    assert worker_container(objects)["args"][-1] == "simulated"
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert (
        one(objects, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is False
    )
    assert not [o for o in objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding")]


def test_the_overlay_runs_the_kubernetes_backend_on_its_access_file(tmp_path: Path) -> None:
    """Two replicas, a PDB that keeps one, --access pointing into the mounted ConfigMap,
    and an access file the backend itself accepts (schema and contexts)."""
    objects = render(OVERLAY)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert one(objects, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": deployment["spec"]["selector"],
    }
    container = worker_container(objects)
    args = container["args"]
    assert args[args.index("--backend") + 1] == "kubernetes"
    access_path = Path(args[args.index("--access") + 1])
    mount = one(
        [
            {"kind": "Mount", "metadata": {"name": m["name"]}, **m}
            for m in container["volumeMounts"]
        ],
        "Mount",
        "access",
    )
    assert access_path.parent == Path(mount["mountPath"])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "access")
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    assert access_path.name in config_map["data"]
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    access = load_access(tmp_path / access_path.name)
    assert access.members, "the overlay's access file lists members"


def test_the_example_secret_holds_the_standard_temporal_variables() -> None:
    """The workers read Temporal's own variables; the example Secret names them."""
    (secret,) = documents(KUBERNETES / "temporal-secret.example.yaml")
    assert secret["metadata"]["name"] == "meshfleet-temporal"
    assert {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"} <= set(secret["stringData"])
    text = (KUBERNETES / "temporal-secret.example.yaml").read_text()
    for variable in ("TEMPORAL_API_KEY", "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS"):
        assert variable in text
