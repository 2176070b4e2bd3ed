"""Editing the mesh values inside a HelmChartProxy valuesTemplate without touching other bytes."""

from __future__ import annotations

import pytest

from activities.backends.kubernetes._values import (
    CLUSTER_ID,
    CLUSTER_NAME,
    CONFIG_CLUSTERS,
    CONFIG_ENABLED,
    OWNED,
    USE_APISERVER,
    PeerEndpoint,
    PreMeshValues,
    ValuesNotEditableError,
    read_values,
    set_value,
)

#: The owned values of member a-1 (id 7) meshed with b-2.
MESHED = {
    CLUSTER_NAME: "a-1",
    CLUSTER_ID: 7,
    USE_APISERVER: True,
    CONFIG_ENABLED: True,
    CONFIG_CLUSTERS: [PeerEndpoint("b-2", 2379, ips=("192.0.2.2",)).value()],
}


def meshed(text: str) -> str:
    for path in OWNED:
        text = set_value(text, path, MESHED[path])
    return text


def test_owned_values_are_written_and_read_back_with_template_expressions_kept() -> None:
    text = "cluster:\n  name: {{ .Cluster.metadata.name }}\nipam:\n  mode: kubernetes\n"

    written = meshed(text)

    assert read_values(written) == MESHED
    assert written.startswith("cluster:\n  name: a-1\n  id: 7\nipam:\n  mode: kubernetes\n")


def test_leaving_restores_the_original_text_exactly() -> None:
    text = (
        "# ours\n"
        "cluster:\n"
        "  name: {{ .Cluster.metadata.name }}  # keep\n"
        "clustermesh:\n"
        "  config:\n"
        "    domain: mesh.example.com\n"
        "    clusters:\n"
        "    - name: legacy\n"
        "      address: legacy.example.com\n"
        "      port: 32379\n"
        "hubble: {enabled: true}\n"
    )
    record = PreMeshValues.capture(text)

    written = meshed(text)

    assert "domain: mesh.example.com" in written
    assert read_values(written)[CONFIG_CLUSTERS] == MESHED[CONFIG_CLUSTERS]
    assert record.restore(written) == text


def test_parents_meshfleet_created_are_removed_again() -> None:
    text = "routingMode: native\n"
    record = PreMeshValues.capture(text)

    assert record.restore(meshed(text)) == text


def test_a_flow_style_parent_is_refused_naming_the_key() -> None:
    with pytest.raises(ValuesNotEditableError, match="'clustermesh' is written in flow style"):
        set_value("clustermesh: {useAPIServer: false}\n", CONFIG_CLUSTERS, [])


def test_unreadable_values_are_refused() -> None:
    with pytest.raises(ValuesNotEditableError, match="not readable as YAML"):
        read_values("cluster: [unclosed\n")
