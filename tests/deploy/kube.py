"""Rendering deploy/kubernetes's kustomizations; checking objects against the client's models.

``render`` implements the part of kustomize these manifests use (resources,
namespace, labels, images, configMapGenerator with create/replace, strategic
merge patches by path) so the tests need no binary; ``test_kubernetes`` checks
it against ``kubectl kustomize`` where one is installed. ``check_object``
deserializes an object into the official ``kubernetes`` client's model for its
kind (which enforces required fields) and serializes it back: a field the
model does not know, or a value of the wrong type, does not survive the round
trip and is reported.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient

Obj = dict[str, Any]

#: apiVersion -> the model prefix of the official client.
_MODEL_PREFIX = {
    "v1": "V1",
    "apps/v1": "V1",
    "batch/v1": "V1",
    "policy/v1": "V1",
    "rbac.authorization.k8s.io/v1": "V1",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document of ``path``."""
    found = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in found:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return found


def key(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["kind"], str(meta.get("namespace") or ""), meta["name"]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as these patches use it: maps merge, ``null`` deletes, named lists merge."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(merged[name], value)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in [*base, *patch])
        and patch
    ):
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            for index, existing in enumerate(merged_list):
                if existing["name"] == item["name"]:
                    merged_list[index] = merge(existing, item)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _config_map(directory: Path, spec: Obj, namespace: str | None) -> Obj:
    data = {Path(name).name: (directory / name).read_text() for name in spec.get("files", [])}
    meta: Obj = {"name": spec["name"]}
    if spec.get("namespace") or namespace:
        meta["namespace"] = spec.get("namespace") or namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _hashed(config_map: Obj) -> str:
    digest = hashlib.sha256(json.dumps(config_map["data"], sort_keys=True).encode()).hexdigest()
    return f"{config_map['metadata']['name']}-{digest[:10]}"


def render(directory: Path) -> list[Obj]:
    """The objects ``kustomize build directory`` produces (for the features used here)."""
    objects, generated = _render(directory)
    # Generated ConfigMaps get a content hash in their name; references follow it.
    renames = {}
    for name in generated:
        for obj in objects:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name:
                renames[name] = _hashed(obj)
                obj["metadata"]["name"] = renames[name]
    for obj in objects:
        for volume in (
            obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []) or []
        ):
            ref = volume.get("configMap")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
    return objects


def _render(directory: Path) -> tuple[list[Obj], set[str]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    namespace = spec.get("namespace")
    objects: list[Obj] = []
    generated: set[str] = set()
    for resource in spec.get("resources", []):
        path = directory / resource
        if path.is_dir():
            found, names = _render(path)
            objects += found
            generated |= names
        else:
            objects += documents(path)
    for generator in spec.get("configMapGenerator", []):
        made = _config_map(directory, generator, namespace)
        generated.add(generator["name"])
        if generator.get("behavior") == "replace":
            for index, obj in enumerate(objects):
                if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == generator["name"]:
                    made["metadata"] = obj["metadata"]
                    objects[index] = made
                    break
            else:
                raise AssertionError(f"{directory}: nothing to replace for {generator['name']}")
        else:
            objects.append(made)
    for patch in spec.get("patches", []):
        patch_doc = documents(directory / patch["path"])[0]
        kind, _, name = key(patch_doc)
        targets = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(targets) == 1, f"{directory}: patch {patch['path']} matches {len(targets)}"
        merged = merge(targets[0], patch_doc)
        objects[objects.index(targets[0])] = merged
    for obj in objects:
        if namespace and obj["kind"] not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
        for pairs in spec.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(pairs["pairs"])
        for image in spec.get("images", []):
            _set_image(obj, image)
    return objects, generated


def _set_image(obj: Obj, image: Obj) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def model_name(obj: Obj) -> str:
    prefix = _MODEL_PREFIX.get(obj.get("apiVersion", ""))
    assert prefix, f"{obj.get('kind')}: apiVersion {obj.get('apiVersion')!r} is not a stable one"
    return f"{prefix}{obj['kind']}"


def _normalized(value: Any) -> Any:
    """Drop empty values the models leave out when serializing."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def check_object(obj: Obj) -> Any:
    """The object as its client model; AssertionError on unknown fields or wrong types."""
    client = ApiClient()
    try:
        model = client._ApiClient__deserialize(copy.deepcopy(obj), model_name(obj))  # type: ignore[attr-defined]
    except ValueError as error:  # pydantic's ValidationError: a wrong type or a missing field
        raise AssertionError(f"{obj['kind']}/{obj['metadata'].get('name')}: {error}") from None
    back = client.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    expected = obj
    assert _normalized(back) == _normalized(expected), (
        f"{obj['kind']}/{obj['metadata'].get('name')}: fields or types the "
        f"{model_name(obj)} model does not accept:\n"
        f"{json.dumps(_diff(_normalized(expected), _normalized(back)), indent=2)}"
    )
    return model


def _diff(expected: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(got, dict):
        out: list[str] = []
        for name in sorted(set(expected) | set(got)):
            out += _diff(expected.get(name), got.get(name), f"{path}.{name}")
        return out
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return [
            d
            for i, (e, g) in enumerate(zip(expected, got, strict=True))
            for d in _diff(e, g, f"{path}[{i}]")
        ]
    return [] if expected == got else [f"{path}: {expected!r} -> {got!r}"]
