"""The RBAC in deploy/kubernetes grants exactly what the Kubernetes backend calls, and no more.

The expected rules come from the code: ``API_CALLS`` is every request the
backend can make (its client wrapper refuses any other, and any namespace or
object name outside the declaration), and ``rbac_rules`` groups them per
cluster kind. The manifests themselves are generated from the same declaration
(``make rbac``); the first tests regenerate them and compare byte for byte.
Nothing here is a hand-written list of verbs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

from activities.backends.kubernetes import API_CALLS, Scope, load_access, rbac_rules
from activities.backends.kubernetes import _api as calls
from activities.backends.kubernetes.rbac import (
    REGENERATE_COMMAND,
    main,
    management_manifests,
    member_manifests,
    rule_table,
)
from tests.deploy.conftest import KUBERNETES
from tests.deploy.kube import Obj, documents, render

OVERLAY = KUBERNETES / "overlays" / "kubernetes-backend"
README = Path(__file__).resolve().parents[2] / "README.md"


def yaml_documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


SERVICE_ACCOUNT = ("meshfleet", "meshfleet-worker")
Grant = tuple[str, str, str]  # (api group, resource or non-resource URL, verb)


def expected(scope: Scope) -> set[Grant]:
    return {
        (group, resource, verb) for group, resource, verbs in rbac_rules(scope) for verb in verbs
    }


def bound_roles(objects: list[Obj]) -> list[Obj]:
    """The Roles and ClusterRoles bound to the worker's ServiceAccount."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    found = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = {
            (s.get("namespace"), s["name"])
            for s in binding["subjects"]
            if s["kind"] == "ServiceAccount"
        }
        if SERVICE_ACCOUNT not in subjects:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], namespace, ref["name"]))
        assert role is not None, f"{binding['metadata']['name']} binds a role that is not defined"
        found.append(role)
    return found


def grants(roles: list[Obj]) -> set[Grant]:
    out: set[Grant] = set()
    for role in roles:
        for rule in role["rules"]:
            for verb in rule["verbs"]:
                for url in rule.get("nonResourceURLs", []):
                    out.add(("", url, verb))
                for group in rule.get("apiGroups", []):
                    for resource in rule.get("resources", []):
                        out.add((group, resource, verb))
    return out


def no_wildcards(roles: list[Obj]) -> None:
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "nonResourceURLs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: '*' in {field}"


def test_member_rbac_is_the_generated_one_byte_for_byte() -> None:
    """A call declared (or renamed) without regenerating fails here, naming the command."""
    assert (KUBERNETES / "member-rbac.yaml").read_text() == member_manifests(), (
        f"deploy/kubernetes/member-rbac.yaml is stale: run `{REGENERATE_COMMAND}`"
    )


def test_management_rbac_is_the_generated_one_byte_for_byte() -> None:
    """Generated from the declared calls and the overlay's access file (its members' names)."""
    generated = management_manifests(load_access(OVERLAY / "access.yaml"))
    assert (OVERLAY / "management-rbac.yaml").read_text() == generated, (
        f"{OVERLAY.relative_to(KUBERNETES.parent.parent)}/management-rbac.yaml is stale: "
        f"run `{REGENERATE_COMMAND}`"
    )


def test_the_readme_shows_the_generated_rule_table() -> None:
    table = rule_table()
    assert table in README.read_text(), (
        "README's RBAC rule table is stale: paste "
        "`python -m activities.backends.kubernetes.rbac table`"
    )


def test_the_generator_prints_what_the_checked_in_files_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["member"]) == 0
    assert capsys.readouterr().out == (KUBERNETES / "member-rbac.yaml").read_text()
    assert main(["management", "--access", str(OVERLAY / "access.yaml")]) == 0
    assert capsys.readouterr().out == (OVERLAY / "management-rbac.yaml").read_text()


def test_a_missing_access_file_is_refused_with_exit_2_and_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert main(["management", "--access", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--access" in captured.err
    assert "nowhere.yaml" in captured.err
    assert "Traceback" not in captured.err


def test_each_generated_rule_says_why_the_worker_needs_it() -> None:
    for call in API_CALLS:
        assert call.why, f"{call.describe()} ({call.scope.value}) has no reason"
    text = member_manifests()
    assert "# patch: the connections, in connectionSecrets mode only" in text


def test_the_client_refuses_a_call_outside_its_declared_names_and_namespace() -> None:
    """The generated resourceNames are only true if the code cannot name anything else."""
    api = calls.ClusterApi("eu-west-1", ApiClient(), scope=Scope.MEMBER)
    api.check(calls.PATCH_SECRET, "patch", namespace="kube-system", name="cilium-clustermesh")
    with pytest.raises(AssertionError, match="outside its declaration"):
        api.check(calls.PATCH_SECRET, "patch", namespace="kube-system", name="other")
    with pytest.raises(AssertionError, match="outside its declaration"):
        api.check(calls.GET_CONFIGMAP, "get", namespace="default", name="cilium-config")
    management = calls.ClusterApi("mgmt", ApiClient(), scope=Scope.MANAGEMENT)
    management.check(
        calls.GET_KUBECONFIG_SECRET, "get", namespace="fleet", name="eu-west-1-kubeconfig"
    )
    with pytest.raises(AssertionError, match="outside its declaration"):
        management.check(calls.GET_KUBECONFIG_SECRET, "get", namespace="fleet", name="admin")


def test_the_connection_secret_writes_are_granted_by_name_only() -> None:
    """connectionSecrets mode writes two Secrets; nothing else in kube-system is writable."""
    objects = documents(KUBERNETES / "member-rbac.yaml")
    writes = [
        rule
        for role in bound_roles(objects)
        for rule in role["rules"]
        if "patch" in rule["verbs"] and rule.get("resources") == ["secrets"]
    ]
    assert [sorted(rule["resourceNames"]) for rule in writes] == [
        ["cilium-clustermesh", "cilium-kvstoremesh"]
    ]
    assert not re.search(r"create|update|delete", str([w["verbs"] for w in writes]))


def test_the_backend_declares_calls_on_both_kinds_of_cluster() -> None:
    """Guard: an empty API_CALLS would make the equalities below vacuous."""
    assert {call.scope for call in API_CALLS} == {Scope.MANAGEMENT, Scope.MEMBER}


def test_management_rbac_is_exactly_what_the_backend_calls() -> None:
    """The overlay's roles, bound to the worker, grant every management call and nothing else."""
    objects = render(KUBERNETES / "overlays" / "kubernetes-backend")
    roles = bound_roles(objects)
    assert grants(roles) == expected(Scope.MANAGEMENT)
    no_wildcards(roles)


def test_management_rbac_is_namespaced_where_the_clusters_are() -> None:
    """Nothing cluster-wide: Roles only, in the namespaces of the access file's Clusters."""
    objects = render(KUBERNETES / "overlays" / "kubernetes-backend")
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    overlay = KUBERNETES / "overlays" / "kubernetes-backend"
    access = load_access(overlay / "access.yaml")
    namespaces = {m.cluster_api.namespace for m in access.members if m.cluster_api}
    assert {r["metadata"]["namespace"] for r in bound_roles(objects)} == namespaces


def test_only_the_kubeconfig_secrets_of_the_listed_members_are_readable() -> None:
    """Secrets: ``get`` by name, one ``<cluster>-kubeconfig`` per Cluster API member."""
    overlay = KUBERNETES / "overlays" / "kubernetes-backend"
    access = load_access(overlay / "access.yaml")
    wanted = {f"{m.cluster_api.cluster}-kubeconfig" for m in access.members if m.cluster_api}
    rules = [
        rule
        for role in bound_roles(render(overlay))
        for rule in role["rules"]
        if "secrets" in rule.get("resources", [])
    ]
    assert rules, "no rule grants the kubeconfig Secrets"
    for rule in rules:
        assert rule["resources"] == ["secrets"]
        assert set(rule.get("resourceNames", [])) == wanted


def test_member_rbac_is_exactly_what_the_backend_calls() -> None:
    """member-rbac.yaml grants every member call to the worker's ServiceAccount, nothing else."""
    objects = documents(KUBERNETES / "member-rbac.yaml")
    roles = bound_roles(objects)
    assert grants(roles) == expected(Scope.MEMBER)
    no_wildcards(roles)


def test_member_rbac_is_cluster_wide_only_for_what_is_called_across_namespaces() -> None:
    """Cluster-scoped resources and all-namespace lists need the ClusterRole; Cilium's own
    objects are granted in kube-system only, each by name where the call names one."""
    objects = documents(KUBERNETES / "member-rbac.yaml")
    roles = bound_roles(objects)
    cluster_wide = grants([r for r in roles if r["kind"] == "ClusterRole"])
    namespaced = [r for r in roles if r["kind"] == "Role"]
    assert {r["metadata"]["namespace"] for r in namespaced} == {"kube-system"}
    for group, resource, verb in cluster_wide:
        calls = [
            c
            for c in API_CALLS
            if (c.scope, c.group, c.resource, c.verb) == (Scope.MEMBER, group, resource, verb)
        ]
        # Cluster-scoped, or listed across namespaces, or read/patched in any namespace.
        assert calls, (group, resource, verb)
        assert resource in ("nodes", "namespaces", "/version", "services", "endpointslices")
    kube_system = grants(namespaced)
    assert not kube_system & cluster_wide
    assert {(g, r) for g, r, _ in kube_system} == {
        ("apps", "daemonsets"),
        ("apps", "deployments"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "pods"),
        ("", "pods/exec"),
    }


def test_member_rbac_names_cilium_objects_as_the_backend_does() -> None:
    """resourceNames come from the backend's own constants (a rename there fails here)."""
    from activities.backends.kubernetes import _api as backend

    objects = documents(KUBERNETES / "member-rbac.yaml")
    names: dict[str, set[str]] = {}
    for role in bound_roles(objects):
        for rule in role["rules"]:
            for resource in rule.get("resources", []):
                names.setdefault(resource, set()).update(rule.get("resourceNames", []))
    assert names["daemonsets"] == {backend.CILIUM_AGENT}
    assert names["deployments"] == {backend.CILIUM_OPERATOR, backend.CLUSTERMESH_APISERVER}
    assert names["configmaps"] == {backend.CILIUM_CONFIG}
    assert names["secrets"] == {
        backend.CLUSTERMESH_SECRET,
        backend.KVSTOREMESH_SECRET,
        backend.REMOTE_CERT_SECRET,
        backend.SERVER_CERT_SECRET,
    }
    assert names["pods"] == set()  # listed by label selector: names cannot restrict a list


def test_the_base_grants_nothing() -> None:
    """The simulated worker of the base has no Kubernetes permissions at all."""
    objects = render(KUBERNETES / "base")
    assert bound_roles(objects) == []


def _write(path: Path, text: str) -> Path:
    """An access file next to a copy of the overlay's kubeconfig (context ``management``)."""
    (path.parent / "in-cluster.kubeconfig").write_text(
        (OVERLAY / "in-cluster.kubeconfig").read_text()
    )
    path.write_text("kubeconfig: in-cluster.kubeconfig\n" + text)
    return path


def test_discovered_members_get_their_namespace_and_the_kubeconfigs_named_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    access = _write(
        tmp_path / "access.yaml",
        "discover:\n  - managementContext: management\n    namespace: prod\n"
        "    labelSelector: meshfleet.io/fleet=prod\n",
    )
    assert main(["management", "--access", str(access), "--cluster", "prod/alpha-1"]) == 0
    roles = bound_roles(list(yaml_documents(capsys.readouterr().out)))
    assert [(r["metadata"]["namespace"], r["kind"]) for r in roles] == [("prod", "Role")]
    secrets = [rule for rule in roles[0]["rules"] if rule["resources"] == ["secrets"]]
    assert [rule["resourceNames"] for rule in secrets] == [["alpha-1-kubeconfig"]]


def test_discovery_across_all_namespaces_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    access = _write(
        tmp_path / "access.yaml",
        "discover:\n  - managementContext: management\n"
        "    labelSelector: meshfleet.io/fleet=prod\n",
    )
    assert main(["management", "--access", str(access)]) == 2
    err = capsys.readouterr().err
    assert "discover[0].namespace" in err
    assert "Traceback" not in err


def test_a_cluster_argument_without_its_namespace_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    access = str(OVERLAY / "access.yaml")
    assert main(["management", "--access", access, "--cluster", "alpha-1"]) == 2
    err = capsys.readouterr().err
    assert "--cluster" in err
    assert "NAMESPACE/NAME" in err
