"""The mesh's Helm values inside a HelmChartProxy ``valuesTemplate``, edited in place.

A CAAPH ``valuesTemplate`` is text: Go template expressions inside YAML,
comments, the user's own layout. meshfleet owns five values (:data:`OWNED`)
and must leave every other byte alone, so it never re-serialises the
document: it finds the lines of one key (the key line and everything indented
under it) and replaces, inserts or removes just those lines.

:class:`PreMeshValues` is what a cluster's owned values were before meshfleet
first wrote them (the exact lines, or absent), kept as an annotation on the
HelmChartProxy so leaving the mesh puts them back byte for byte.

:class:`ProxyValues` pairs a HelmChartProxy's text with that record; joining,
peering and leaving are pure changes of it (:func:`joined_values`,
:func:`with_peers`, :func:`without_peers`, :func:`restored_values`).

Block-style YAML only: a parent written in flow style (``cluster: {name: a}``)
cannot be edited line by line and is refused with
:class:`ValuesNotEditableError` naming the key.

Purely data-manipulative: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import Field, ValidationError

from engine.domain.errors import MeshfleetError, Retry
from engine.domain.model import DomainModel

__all__ = [
    "ANNOTATION_PRE_MESH_VALUES",
    "OWNED",
    "PeerEndpoint",
    "PreMeshValues",
    "ProxyValues",
    "ValuesNotEditableError",
    "joined_values",
    "read_values",
    "remove_value",
    "restored_values",
    "set_value",
    "values_clusters",
    "with_peers",
    "without_peers",
]

#: HelmChartProxy annotation: JSON :class:`PreMeshValues`, present while meshfleet owns values.
ANNOTATION_PRE_MESH_VALUES = "meshfleet.io/pre-mesh-values"

CLUSTER_NAME = "cluster.name"
CLUSTER_ID = "cluster.id"
USE_APISERVER = "clustermesh.useAPIServer"
CONFIG_ENABLED = "clustermesh.config.enabled"
CONFIG_CLUSTERS = "clustermesh.config.clusters"
#: The values meshfleet owns on a member, parents before children.
OWNED = (CLUSTER_NAME, CLUSTER_ID, USE_APISERVER, CONFIG_ENABLED, CONFIG_CLUSTERS)

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")
_TEMPLATE = re.compile(r"\{\{.*?\}\}")


class ValuesNotEditableError(MeshfleetError):
    """The values text is laid out in a way meshfleet cannot edit without touching other bytes."""

    retry = Retry.NON_RETRYABLE


@dataclass(frozen=True)
class PeerEndpoint:
    """Where a peer's clustermesh-apiserver answers (``clustermesh.config.clusters`` entry)."""

    name: str
    port: int
    ips: tuple[str, ...] = ()
    address: str | None = None

    def value(self) -> dict[str, Any]:
        """The chart's entry: ``{name, port, ips}`` or ``{name, port, address}``."""
        entry: dict[str, Any] = {"name": self.name}
        if self.address:
            entry["address"] = self.address
        if self.ips:
            entry["ips"] = list(self.ips)
        entry["port"] = self.port
        return entry


class PreMeshValues(DomainModel):
    """The owned values' original lines (None: the key was absent) before meshfleet wrote them."""

    lines: dict[str, str | None] = Field(default_factory=dict)

    @classmethod
    def capture(cls, text: str) -> PreMeshValues:
        """Remember the current lines of every owned key (and of their parents)."""
        paths = {*OWNED, *(a for p in OWNED for a in _ancestors(p))}
        return cls(lines={p: _span_text(text, p) for p in sorted(paths)})

    @classmethod
    def read(cls, annotations: Mapping[str, str]) -> PreMeshValues | None:
        """The record on a HelmChartProxy (an unreadable record reads as absent)."""
        text = annotations.get(ANNOTATION_PRE_MESH_VALUES)
        if text is None:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return None

    def dump(self) -> str:
        """Compact JSON for the annotation."""
        return json.dumps(self.model_dump(by_alias=True), sort_keys=True, separators=(",", ":"))

    def restore(self, text: str) -> str:
        """Put the owned keys back as they were; drop parents meshfleet created if now empty."""
        for path in reversed(OWNED):
            original = self.lines.get(path)
            text = remove_value(text, path) if original is None else _put_span(text, path, original)
        for parent in sorted({a for p in OWNED for a in _ancestors(p)}, key=len, reverse=True):
            if self.lines.get(parent) is None and _is_empty_block(text, parent):
                text = remove_value(text, parent)
        return text


def _parents(path: str) -> str | None:
    return path.rsplit(".", 1)[0] if "." in path else None


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# --- reading ---------------------------------------------------------------------------------


def read_values(text: str) -> dict[str, Any]:
    """The owned values as YAML reads them (template expressions as text); absent ones left out.

    Raises ValuesNotEditableError when the text cannot be read as YAML even with
    its template expressions neutralised.
    """
    try:
        document = yaml.safe_load(_neutralised(text)) if text.strip() else {}
    except yaml.YAMLError:
        raise ValuesNotEditableError("the valuesTemplate is not readable as YAML") from None
    found: dict[str, Any] = {}
    for path in OWNED:
        node: Any = document
        for part in path.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            found[path] = node
    return found


_MISSING = object()


def _neutralised(text: str) -> str:
    """Template expressions as quoted strings, so the YAML structure can be read."""
    return _TEMPLATE.sub(lambda m: json.dumps(m.group(0)), text)


# --- editing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    indent: int
    inline: str  # what follows ``key:`` on the key line (stripped)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _block_end(lines: Sequence[str], start: int, indent: int, inline: str) -> int:
    """One past the last line belonging to the key at ``start`` (trailing comments excluded)."""
    end = start + 1
    index = start + 1
    while index < len(lines):
        line = lines[index]
        if _is_content(line):
            deeper = _indent(line) > indent
            sequence_at_same = (
                not inline and _indent(line) == indent and line.lstrip(" ").startswith("-")
            )
            if not (deeper or sequence_at_same):
                break
            end = index + 1
        index += 1
    return end


def _find(lines: Sequence[str], path: str) -> _Span | None:
    start, stop, indent = 0, len(lines), None
    found: _Span | None = None
    for depth, part in enumerate(path.split(".")):
        found = None
        for index in range(start, stop):
            line = lines[index]
            if not _is_content(line):
                continue
            if indent is None:
                indent = _indent(line)
            match = _KEY.match(line.rstrip("\r\n"))
            if _indent(line) != indent or match is None or match.group("key") != part:
                continue
            inline = match.group("rest").split(" #", 1)[0].strip()
            found = _Span(index, _block_end(lines, index, indent, inline), indent, inline)
            break
        if found is None:
            return None
        if depth < path.count("."):
            if found.inline:
                raise ValuesNotEditableError(
                    f"valuesTemplate key {'.'.join(path.split('.')[: depth + 1])!r} is written "
                    "in flow style; write it as a block mapping so meshfleet can edit "
                    f"{path!r} without touching other values"
                )
            start, stop = found.start + 1, found.end
            child = next((i for i in range(start, stop) if _is_content(lines[i])), None)
            indent = _indent(lines[child]) if child is not None else None
    return found


def _span_text(text: str, path: str) -> str | None:
    lines = _lines(text)
    span = _find(lines, path)
    return "".join(lines[span.start : span.end]) if span else None


def _render(key: str, value: Any, indent: int) -> str:
    dumped = yaml.safe_dump({key: value}, default_flow_style=False, sort_keys=False)
    return "".join(" " * indent + line + "\n" for line in dumped.splitlines())


def _reindent(block: str, indent: int) -> str:
    """A captured block moved to ``indent`` (its own relative layout kept)."""
    lines = _lines(block)
    first = _indent(lines[0]) if lines else 0
    shift = indent - first
    if shift == 0:
        return block
    out = []
    for line in lines:
        out.append(" " * shift + line if shift > 0 else line[min(-shift, _indent(line)) :])
    return "".join(out)


def set_value(text: str, path: str, value: Any) -> str:
    """``text`` with ``path`` set to ``value``; every line outside that key unchanged."""
    key = path.rsplit(".", 1)[-1]
    return _put(text, path, lambda indent: _render(key, value, indent))


def _put_span(text: str, path: str, block: str) -> str:
    return _put(text, path, lambda indent: _reindent(block, indent))


def _put(text: str, path: str, render: Callable[[int], str]) -> str:
    lines = _lines(text)
    span = _find(lines, path)
    if span is not None:
        return "".join([*lines[: span.start], render(span.indent), *lines[span.end :]])
    parent = _parents(path)
    if parent is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join([*lines, render(0)])
    if _find(lines, parent) is None:
        name = parent.rsplit(".", 1)[-1]
        lines = _lines(_put(text, parent, lambda indent: f"{' ' * indent}{name}:\n"))
    owner = _find(lines, parent)
    assert owner is not None
    if owner.inline:
        raise ValuesNotEditableError(
            f"valuesTemplate key {parent!r} is written in flow style; write it as a block "
            f"mapping so meshfleet can edit {path!r} without touching other values"
        )
    child = next((i for i in range(owner.start + 1, owner.end) if _is_content(lines[i])), None)
    indent = _indent(lines[child]) if child is not None else owner.indent + 2
    if not lines[owner.end - 1].endswith("\n"):
        lines[owner.end - 1] += "\n"
    return "".join([*lines[: owner.end], render(indent), *lines[owner.end :]])


def remove_value(text: str, path: str) -> str:
    """``text`` without ``path``'s lines (unchanged if absent)."""
    lines = _lines(text)
    span = _find(lines, path)
    if span is None:
        return text
    return "".join([*lines[: span.start], *lines[span.end :]])


def _is_empty_block(text: str, path: str) -> bool:
    lines = _lines(text)
    span = _find(lines, path)
    if span is None or span.inline:
        return False
    return not any(_is_content(line) for line in lines[span.start + 1 : span.end])


# --- a HelmChartProxy's mesh values: the changes joining, peering and leaving make ------------


@dataclass(frozen=True)
class ProxyValues:
    """A HelmChartProxy's ``valuesTemplate`` and meshfleet's record of the pre-mesh values."""

    text: str
    record: PreMeshValues | None


def joined_values(cluster: str, values: ProxyValues, cluster_id: int) -> ProxyValues:
    """The member's own mesh values, before it has any peer (a retry changes nothing)."""
    current = read_values(values.text)
    peers = current.get(CONFIG_CLUSTERS) or []
    if values.record is not None and peers and current.get(CLUSTER_ID) != cluster_id:
        raise MeshfleetError(
            f"cluster {cluster!r} is meshed with cluster id {current.get(CLUSTER_ID)}; "
            f"changing it to {cluster_id} would restart every agent and break identities"
        )
    record = values.record or PreMeshValues.capture(values.text)
    text = values.text
    for path, value in (
        (CLUSTER_NAME, cluster),
        (CLUSTER_ID, cluster_id),
        (USE_APISERVER, True),
        (CONFIG_ENABLED, True),
    ):
        if current.get(path) != value:
            text = set_value(text, path, value)
    if not isinstance(current.get(CONFIG_CLUSTERS), list):
        text = set_value(text, CONFIG_CLUSTERS, [])
    return ProxyValues(text, record)


def _peer_entries(values: ProxyValues) -> list[dict[str, Any]]:
    found = read_values(values.text).get(CONFIG_CLUSTERS) or []
    return [dict(e) for e in found if isinstance(e, dict)]


def with_peers(cluster: str, values: ProxyValues, endpoints: Sequence[PeerEndpoint]) -> ProxyValues:
    """``clustermesh.config.clusters`` with an up-to-date entry for each of ``endpoints``."""
    if values.record is None:
        raise MeshfleetError(
            f"cluster {cluster!r}: meshfleet has not enabled the mesh in its HelmChartProxy "
            "values (enable_mesh first)"
        )
    fresh = {e.name: e.value() for e in endpoints if e.name != cluster}
    entries = [e for e in _peer_entries(values) if str(e.get("name")) not in fresh]
    entries.extend(fresh.values())
    entries.sort(key=lambda e: str(e.get("name")))
    if entries == _peer_entries(values):
        return values
    return ProxyValues(set_value(values.text, CONFIG_CLUSTERS, entries), values.record)


def without_peers(values: ProxyValues, peers: Sequence[str]) -> ProxyValues:
    """``clustermesh.config.clusters`` without the entries of ``peers``."""
    current = _peer_entries(values)
    kept = [e for e in current if str(e.get("name")) not in set(peers)]
    if values.record is None or kept == current:
        return values
    return ProxyValues(set_value(values.text, CONFIG_CLUSTERS, kept), values.record)


def restored_values(values: ProxyValues) -> ProxyValues:
    """The owned values as they were before meshfleet first wrote them."""
    if values.record is None:
        return values
    return ProxyValues(values.record.restore(values.text), None)


def values_clusters(values_template: str) -> list[str] | None:
    """Peer names in ``clustermesh.config.clusters`` of Helm values; None if unreadable."""
    try:
        clusters = read_values(values_template).get(CONFIG_CLUSTERS) or []
    except MeshfleetError:
        return None  # Go templates can make the text unparsable: nothing to compare then.
    if not isinstance(clusters, list):
        return None
    return [str(c.get("name")) for c in clusters if isinstance(c, dict)]
