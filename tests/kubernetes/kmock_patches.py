"""Every reach into kmock's private code, in one place (written for kmock 0.8).

kmock's public API serves objects; these tests need more of an API server than
kmock 0.8 gives, and the only way in is through private hooks, so a kmock
upgrade may break them. ``pyproject.toml`` pins ``kmock>=0.8,<0.9`` for that
reason; when moving the pin, rerun ``tests/kubernetes`` and re-check each item:

- ``KubernetesEmulator._handle`` (overridden): keeps ``_requests`` short and
  checks and moves ``resourceVersion`` (a 409 through ``_render_error`` and
  ``kmock._internal.k8s.KubernetesObjectConflictError``), because kmock keeps
  no versions and the backend's writes are compare-and-swap;
- ``KubernetesEmulator._serve_server_version`` (overridden): ``/version`` is
  fixed in kmock;
- ``KubernetesEmulator._serve_list`` (overridden): kmock ignores ``labelSelector``;
- ``kmock._internal.parsing.parse_path`` (monkeypatched per test): kmock parses
  ``/api/v1/namespaces[/{name}]`` as a namespace prefix, not as the Namespace
  resource (a 500 on list, a 404 on get and patch).

Nothing else in ``tests/kubernetes`` may import ``kmock._internal`` or touch a
private kmock attribute.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

import aiohttp.web
import attrs
import kmock
import pytest
from kmock._internal import parsing
from kmock._internal.k8s import KubernetesObjectConflictError

#: Requests kept for matching and assertions (the tests look at the last few only).
_KEPT_REQUESTS = 64


@attrs.define(kw_only=True)
class PatchedEmulator(kmock.KubernetesEmulator):
    """kmock's emulator made to behave like an API server where kmock 0.8 does not.

    - ``/version`` is settable (:attr:`git_version`): kmock's is fixed.
    - Lists honour ``labelSelector``: kmock ignores it.
    - ``resourceVersion`` moves on with every change, and a patch naming an
      older one is refused with 409 Conflict: kmock keeps no versions, and the
      backend's read-modify-write relies on them.
    - Only the last requests are kept: kmock matches each request against every
      request it kept, which is quadratic for a polling client.
    """

    git_version: str = "v1.33.2"
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _writes: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    #: Patches refused for a stale resourceVersion (for assertions).
    conflicts: int = attrs.field(default=0, init=False)
    _holds: dict[tuple[str, str | None, str], asyncio.Barrier] = attrs.field(
        factory=dict, init=False
    )

    def hold_patches(self, resource: str, namespace: str | None, name: str, parties: int) -> None:
        """Make the next ``parties`` patches of one object wait for each other before any
        applies: writers that read the same version before patching race for certain."""
        self._holds[resource, namespace, name] = asyncio.Barrier(parties)

    def _stamp(self) -> None:
        """Give every object without one a resourceVersion (seeds are written directly)."""
        for key in list(self.objects):
            obj = self.objects[key]
            if not obj.deleted and not (obj.get("metadata") or {}).get("resourceVersion"):
                obj.patch({"metadata": {"resourceVersion": str(next(self._versions))}})

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock matches each request against every request it kept (quadratic for a
        # polling client): keep only the recent ones, which is all these tests look at.
        del self._requests[:-_KEPT_REQUESTS]
        if request.resource is None or request.action != kmock.action.UPDATE or not request.name:
            self._stamp()
            return await super()._handle(request)
        hold = next(
            (
                k
                for k in self._holds
                if request.resource == k[0] and (request.namespace, request.name) == k[1:]
            ),
            None,
        )
        if hold is not None:
            barrier = self._holds[hold]
            if barrier.n_waiting + 1 == barrier.parties:
                del self._holds[hold]  # the last party: later patches pass freely
            await barrier.wait()
        async with self._writes:  # check, patch and answer as one step, like etcd's CAS
            self._stamp()
            key = (request.resource, request.namespace, request.name)
            data = request.data if isinstance(request.data, dict) else {}
            wanted = (data.get("metadata") or {}).get("resourceVersion")
            if key in self.objects and not self.objects[key].deleted:
                current = (self.objects[key].get("metadata") or {}).get("resourceVersion")
                if wanted is not None and str(wanted) != str(current):
                    self.conflicts += 1
                    return await self._render_error(KubernetesObjectConflictError())
            data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
            return await super()._handle(request)

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, str]:
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": self.git_version}

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = cast(dict[str, Any], await super()._serve_list(request))
        selector = request.params.get("labelSelector")
        if selector:
            payload["items"] = [i for i in payload["items"] if _selected(selector, i)]
        return payload

    def change(self, resource: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        """Change an object as a controller would (merge; None removes; a new resourceVersion)."""
        self.objects[resource, namespace, name].patch(body)
        version = {"metadata": {"resourceVersion": str(next(self._versions))}}
        self.objects[resource, namespace, name].patch(version)


def _selected(selector: str, item: dict[str, Any]) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if (value and labels.get(key) != value) or (not value and key not in labels):
            return False
    return True


#: kmock's own path parser, taken before :func:`namespaces_are_a_resource` replaces it.
_parse_path = parsing.parse_path


def _parse_namespaces(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _parse_path(path)


def namespaces_are_a_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/api/v1/namespaces[/{name}]`` is the Namespace resource (kmock 0.8 misparses it)."""
    monkeypatch.setattr(parsing, "parse_path", _parse_namespaces)
