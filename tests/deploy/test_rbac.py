"""The RBAC in deploy/kubernetes grants exactly what the Kubernetes backend calls, and no more.

The expected rules come from the code: ``API_CALLS`` is every request the
backend can make (its client wrapper refuses any other), and ``rbac_rules``
groups them per cluster kind. Nothing here is a hand-written list of verbs.
"""

from __future__ import annotations

from activities.backends.kubernetes import API_CALLS, Scope, load_access, rbac_rules
from tests.deploy.conftest import KUBERNETES
from tests.deploy.kube import Obj, documents, render

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
    from activities.backends.kubernetes import _backend as backend

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
