"""The worker's RBAC, generated from the backend's declared API calls (one source).

Every request the Kubernetes backend makes is an :class:`~._api.ApiCall` declared
in ``_api.py`` with its verb, resource, namespace and object names, and
:class:`~._api.ClusterApi` refuses anything outside that declaration. This module
turns the declaration into the manifests under ``deploy/kubernetes``, so the RBAC
grants exactly what the code can do::

    python -m activities.backends.kubernetes.rbac member > deploy/kubernetes/member-rbac.yaml
    python -m activities.backends.kubernetes.rbac management --access ACCESS_FILE \
        [--cluster NAMESPACE/NAME ...]   # members found by a discovery rule
    python -m activities.backends.kubernetes.rbac table   # the README's rule table

(``make rbac`` runs the first two for the manifests in this repository.)

Least privilege: ``resourceNames`` wherever the backend names fixed objects
(``cilium-config``, ``cilium-clustermesh``, ``<cluster>-kubeconfig``...); Roles
in the one namespace a call is made in (``kube-system`` on members, the Cluster
API namespaces of the access file on the management cluster); a ClusterRole only
for what is cluster-scoped or read and annotated in any namespace.

Does no I/O except reading the access file in :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from activities.backends.kubernetes._access import KubernetesAccess, load_access
from activities.backends.kubernetes._api import API_CALLS, ApiCall, Scope
from engine.domain.errors import FieldError, InvalidInputError

__all__ = [
    "REGENERATE_COMMAND",
    "Rule",
    "main",
    "management_manifests",
    "member_manifests",
    "rule_table",
    "rules",
]

#: The command that regenerates the checked-in manifests (named in test failures).
REGENERATE_COMMAND = "make rbac"
_SERVICE_ACCOUNT = ("meshfleet", "meshfleet-worker")
_LABELS = "  labels:\n    app.kubernetes.io/part-of: meshfleet\n"


@dataclass
class Rule:
    """One PolicyRule: verbs on one resource (or non-resource URL), maybe by name."""

    group: str
    resource: str
    names: tuple[str, ...]
    verbs: list[str] = field(default_factory=list)
    why: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        """The rule as an indented YAML list item, its reasons as a comment above it."""
        out = "".join(
            f"  # {verb}: {why}\n" for verb, why in zip(self.verbs, self.why, strict=True)
        )
        verbs = _flow(sorted(self.verbs))
        if self.resource.startswith("/"):
            return out + f"  - nonResourceURLs: {_flow([self.resource])}\n    verbs: {verbs}\n"
        out += f"  - apiGroups: {_flow([self.group])}\n    resources: {_flow([self.resource])}\n"
        out += f"    verbs: {verbs}\n"
        if self.names:
            out += f"    resourceNames: {_flow(list(self.names))}\n"
        return out


def rules(calls: Iterable[ApiCall], clusters: Sequence[str] = ()) -> list[Rule]:
    """Calls grouped into rules by (group, resource, names), in declaration order.

    ``{cluster}`` in a declared name becomes one name per entry of ``clusters``.
    """
    found: dict[tuple[str, str, tuple[str, ...]], Rule] = {}
    for call in calls:
        names = tuple(
            name.format(cluster=cluster)
            for name in call.names
            for cluster in (clusters if "{cluster}" in name else ("",))
        )
        if call.names and not names:
            continue  # by name, but no object of that name exists: grant nothing
        rule = found.setdefault(
            (call.group, call.resource, names), Rule(call.group, call.resource, names)
        )
        if call.verb not in rule.verbs:
            rule.verbs.append(call.verb)
            rule.why.append(call.why)
    for rule in found.values():
        order = sorted(range(len(rule.verbs)), key=lambda i: rule.verbs[i])
        rule.verbs = [rule.verbs[i] for i in order]
        rule.why = [rule.why[i] for i in order]
    return list(found.values())


def member_manifests() -> str:
    """``deploy/kubernetes/member-rbac.yaml``: apply on every member cluster."""
    calls = [c for c in API_CALLS if c.scope is Scope.MEMBER]
    cluster_wide = [c for c in calls if c.namespace is None]
    namespaces = sorted({c.namespace for c in calls if c.namespace is not None})
    docs = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: meshfleet\n",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: meshfleet-worker\n"
        "  namespace: meshfleet\nautomountServiceAccountToken: false\n",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: meshfleet-worker-token\n"
        "  namespace: meshfleet\n  annotations:\n"
        "    kubernetes.io/service-account.name: meshfleet-worker\n"
        "type: kubernetes.io/service-account-token\n",
    ]
    docs += _role_and_binding("ClusterRole", "meshfleet-member", None, rules(cluster_wide))
    for namespace in namespaces:
        scoped = [c for c in calls if c.namespace == namespace]
        docs += _role_and_binding("Role", "meshfleet-member-cilium", namespace, rules(scoped))
    header = _header(
        "python -m activities.backends.kubernetes.rbac member",
        "Apply on every member cluster the worker reaches through a kubeconfig context of\n"
        "its own (not Cluster API's admin kubeconfig):\n"
        "  kubectl --context MEMBER apply -f deploy/kubernetes/member-rbac.yaml\n"
        "It grants the ServiceAccount meshfleet/meshfleet-worker cluster-wide only what\n"
        "is cluster-scoped or read and annotated in any namespace, and in kube-system\n"
        "only Cilium's own objects, by name where the backend names them. Build the\n"
        "worker's kubeconfig from the token Secret below (kubectl -n meshfleet get\n"
        "secret meshfleet-worker-token), or bind your own user or group to the roles.",
    )
    return header + "---\n".join(docs)


def management_manifests(
    access: KubernetesAccess, discovered: Sequence[tuple[str, str]] = ()
) -> str:
    """The Roles on the Cluster API management cluster, for the members of ``access``.

    One Role and RoleBinding per namespace holding the members' Cluster objects
    (listed members, and the namespaces of discovery rules); the kubeconfig
    Secrets of exactly those members, by name, plus ``discovered``
    ``(namespace, cluster)`` pairs: members a label selector finds cannot be
    named from the access file. Nothing cluster-wide, so a discovery rule
    without a namespace is refused (InvalidInputError naming the field).
    """
    calls = [c for c in API_CALLS if c.scope is Scope.MANAGEMENT]
    by_namespace: dict[str, list[str]] = {}
    errors = [
        FieldError(
            path=f"discover[{index}].namespace",
            message="discovery across all namespaces needs cluster-wide RBAC, which is "
            "not generated: name the namespace of the Cluster objects",
        )
        for index, rule in enumerate(access.discover)
        if rule.namespace is None
    ]
    if errors:
        raise InvalidInputError(errors)
    for rule in access.discover:
        by_namespace.setdefault(str(rule.namespace), [])
    for member in access.members:
        if member.cluster_api is not None:
            by_namespace.setdefault(member.cluster_api.namespace, []).append(
                member.cluster_api.cluster
            )
    for namespace, cluster in discovered:
        by_namespace.setdefault(namespace, []).append(cluster)
    docs: list[str] = []
    for namespace in sorted(by_namespace):
        clusters = sorted(set(by_namespace[namespace]))
        docs += _role_and_binding("Role", "meshfleet-worker", namespace, rules(calls, clusters))
    header = _header(
        "python -m activities.backends.kubernetes.rbac management --access ACCESS_FILE",
        "The least the Kubernetes backend needs on the Cluster API management cluster:\n"
        "Roles in the namespaces of the access file's Cluster objects, the\n"
        "<cluster>-kubeconfig Secrets of its members by name, nothing cluster-wide.\n"
        "Regenerate when members are added to the access file.",
    )
    return header + "---\n".join(docs)


def rule_table() -> str:
    """The rules as a Markdown table (the README shows it; a test keeps it equal)."""
    lines = [
        "| Cluster | Where | API group | Resource | Names | Verbs |",
        "|---|---|---|---|---|---|",
    ]
    for scope in (Scope.MANAGEMENT, Scope.MEMBER):
        calls = [c for c in API_CALLS if c.scope is scope]
        places = sorted({c.namespace for c in calls}, key=lambda n: (n is not None, n or ""))
        for place in places:
            where = (
                "Cluster API namespaces" if scope is Scope.MANAGEMENT else (place or "cluster-wide")
            )
            for rule in rules([c for c in calls if c.namespace == place], ("<cluster>",)):
                url = rule.resource.startswith("/")
                names = ", ".join(f"`{n}`" for n in rule.names) or ("—" if url else "any")
                group = "—" if url else f"`{rule.group or 'core'}`"
                lines.append(
                    f"| {scope.value} | {where} | {group} | `{rule.resource}` "
                    f"| {names} | {', '.join(rule.verbs)} |"
                )
    return "\n".join(lines) + "\n"


def _header(command: str, text: str) -> str:
    lines = [
        f"# Generated by `{REGENERATE_COMMAND}` ({command})",
        "# from the backend's declared API calls (activities/backends/kubernetes/_api.py).",
        "# Do not edit: tests/deploy/test_rbac.py regenerates it and compares.",
        "#",
        *(f"# {line}".rstrip() for line in text.splitlines()),
    ]
    return "\n".join(lines) + "\n"


def _role_and_binding(kind: str, name: str, namespace: str | None, found: list[Rule]) -> list[str]:
    where = f"  namespace: {namespace}\n" if namespace else ""
    role = (
        f"apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n"
        f"  name: {name}\n{where}{_LABELS}rules:\n" + "".join(rule.yaml() for rule in found)
    )
    sa_namespace, sa_name = _SERVICE_ACCOUNT
    binding = (
        f"apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}Binding\nmetadata:\n"
        f"  name: {name}\n{where}{_LABELS}"
        f"roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {kind}\n  name: {name}\n"
        f"subjects:\n  - kind: ServiceAccount\n    name: {sa_name}\n"
        f"    namespace: {sa_namespace}\n"
    )
    return [role, binding]


def _flow(items: Sequence[str]) -> str:
    """A YAML flow sequence of quoted strings (JSON is valid YAML)."""
    return json.dumps(list(items))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m activities.backends.kubernetes.rbac {member|management|table}``."""
    parser = argparse.ArgumentParser(
        prog="python -m activities.backends.kubernetes.rbac",
        description="Print the worker's RBAC, generated from the backend's declared API calls.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("member", help="member-rbac.yaml, for every member cluster")
    management = sub.add_parser("management", help="the Roles on the management cluster")
    management.add_argument("--access", type=Path, required=True, help="the access file")
    management.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME",
        help="a Cluster found by a discovery rule (its kubeconfig Secret is granted by name)",
    )
    sub.add_parser("table", help="the rules as a Markdown table")
    args = parser.parse_args(argv)
    if args.what == "member":
        sys.stdout.write(member_manifests())
    elif args.what == "table":
        sys.stdout.write(rule_table())
    else:
        bad = [c for c in args.cluster if not re.fullmatch(r"[^/\s]+/[^/\s]+", c)]
        if bad:
            sys.stderr.write(f"error: --cluster: {', '.join(bad)} is not NAMESPACE/NAME\n")
            return 2
        discovered = [(c.split("/")[0], c.split("/")[1]) for c in args.cluster]
        try:
            text = management_manifests(load_access(args.access), discovered)
        except InvalidInputError as error:
            sys.stderr.write(f"error: --access: {error}\n")
            return 2
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
