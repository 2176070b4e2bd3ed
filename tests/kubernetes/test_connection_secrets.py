"""Members without CAAPH, with ``mesh: connectionSecrets``: connections written as Secrets.

Like ``cilium clustermesh connect``: one entry per peer in the member's
connection Secret (``cilium-kvstoremesh`` with KVStoreMesh), pointing at the
peer's clustermesh-apiserver address and at the shared-CA client files Cilium
projects from the member's own ``clustermesh-apiserver-remote-cert``. No key
leaves its cluster; only the public CA certificates are compared.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from engine.domain.errors import MeshfleetError
from tests.kubernetes.emulated_fleet import Fleet, walk_strings
from tests.kubernetes.seeds import IDS, b64

A, B = "ap-south-1", "us-east-1"
SECRETS = "v1/secrets"


def prepare(fleet: Fleet, *, other_ca_for: str | None = None) -> None:
    """Both members opt in; each exposes its apiserver and holds its clustermesh certificates."""
    access = yaml.safe_load(fleet.access_file.read_text())
    for member in access["members"]:
        if member["name"] in (A, B):
            member["mesh"] = "connectionSecrets"
    fleet.access_file.write_text(yaml.safe_dump(access))
    for name in (A, B):
        emu = fleet.members[name]
        ca = b64("-----BEGIN CERTIFICATE-----\nshared-ca\n-----END CERTIFICATE-----\n")
        if name == other_ca_for:
            ca = b64("-----BEGIN CERTIFICATE-----\nanother-ca\n-----END CERTIFICATE-----\n")
        key = b64(
            f"-----BEGIN EC PRIVATE KEY-----\n{fleet.secrets[-2]}\n-----END EC PRIVATE KEY-----\n"
        )
        for secret in ("clustermesh-apiserver-remote-cert", "clustermesh-apiserver-server-cert"):
            emu.objects[SECRETS, "kube-system", secret] = secret_object(
                secret, {"ca.crt": ca, "tls.crt": b64("cert"), "tls.key": key}
            )
        emu.objects[SECRETS, "kube-system", "cilium-kvstoremesh"] = secret_object(
            "cilium-kvstoremesh", {}
        )
        emu.objects["v1/services", "kube-system", "clustermesh-apiserver"] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "clustermesh-apiserver", "namespace": "kube-system"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 2379}]},
            "status": {"loadBalancer": {"ingress": [{"ip": f"192.0.2.{IDS[name]}"}]}},
        }


def secret_object(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "kube-system"},
        "data": data,
    }


def connections(fleet: Fleet, member: str, secret: str = "cilium-kvstoremesh") -> dict[str, str]:
    data = fleet.members[member].obj(SECRETS, "kube-system", secret)["data"] or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


async def test_connecting_writes_one_entry_per_peer_with_its_address_and_no_key(
    fleet: Fleet,
) -> None:
    prepare(fleet)
    backend = fleet.backend()

    with capture_logs() as logs:
        await backend.connect_peers(A, [B], idempotency_key="c/a")
        await backend.connect_peers(B, [A], idempotency_key="c/b")

    assert connections(fleet, A) == {
        B: "endpoints:\n- https://192.0.2.9:2379\n"
        "trusted-ca-file: /var/lib/cilium/clustermesh/common-etcd-client-ca.crt\n"
        "key-file: /var/lib/cilium/clustermesh/common-etcd-client.key\n"
        "cert-file: /var/lib/cilium/clustermesh/common-etcd-client.crt\n"
    }
    assert list(connections(fleet, B)) == [A]
    # The agents (KVStoreMesh) reach every peer through their local kvstoremesh.
    agents = connections(fleet, A, "cilium-clustermesh")[B]
    assert agents.startswith("endpoints:\n- https://clustermesh-apiserver.kube-system.svc:2379\n")
    assert B in (await backend.describe_member(A)).mesh_peers
    texts = list(walk_strings([dict(e) for e in logs]))
    assert not [t for t in texts for s in fleet.secrets if s in t]
    assert not [t for t in texts if "BEGIN" in t]


async def test_disconnecting_removes_only_that_peers_entry(fleet: Fleet) -> None:
    prepare(fleet)
    backend = fleet.backend()
    await backend.connect_peers(A, [B], idempotency_key="c/a")

    await backend.disconnect_peers(A, [B], idempotency_key="d/a")

    assert connections(fleet, A) == {}
    assert B not in connections(fleet, A, "cilium-clustermesh")
    assert (await backend.describe_member(A)).mesh_peers == ["eu-north-1"]


async def test_a_peer_signed_by_another_ca_is_refused(fleet: Fleet) -> None:
    prepare(fleet, other_ca_for=B)
    backend = fleet.backend()

    with pytest.raises(MeshfleetError, match=r"of \['us-east-1'\] is not signed by the CA"):
        await backend.connect_peers(A, [B], idempotency_key="c/a")

    assert connections(fleet, A) == {}
