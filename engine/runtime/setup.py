"""Preparing an existing Temporal namespace for meshfleet (``meshfleet setup``).

meshfleet needs from a Temporal server only what any Temporal application
needs: a namespace, its search attributes (Keywords and one KeywordList, so the Web UI and
``meshfleet run list`` can filter runs) and workflow updates (every control of
a network or a run is an update; ``network create`` is an update-with-start).
The embedded dev server gets all of that from its command line; a team's
cluster or Temporal Cloud gets it from this module, once, before the workers
start.

The preparation is idempotent: search attributes that exist with the right
type are kept, missing ones are added through the operator service
(``AddSearchAttributes``), and one that exists with another type is an error
that changes nothing (the server would silently keep the old type). The
server's version and capabilities (``GetSystemInfo``) and the namespace's
(``DescribeNamespace``: updates enabled) are checked first.

Does I/O (Temporal's workflow and operator services).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from engine.domain import search_attributes
from engine.domain.errors import MeshfleetError, NotFoundError, UnavailableError
from engine.runtime.devserver import SEARCH_ATTRIBUTES

__all__ = [
    "MIN_SERVER_VERSION",
    "SEARCH_ATTRIBUTE_TYPE",
    "SEARCH_ATTRIBUTE_TYPES",
    "NamespaceNotReadyError",
    "SetupReport",
    "prepare_namespace",
]

#: meshfleet's search attributes are Keywords (exact match, filterable in the Web UI)...
SEARCH_ATTRIBUTE_TYPE = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
#: ...except MeshfleetMember, a KeywordList (the clusters a workflow touched).
SEARCH_ATTRIBUTE_TYPES: dict[str, IndexedValueType.ValueType] = {
    key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
    for key in search_attributes.ALL
}


def _wanted_type(name: str) -> IndexedValueType.ValueType:
    return SEARCH_ATTRIBUTE_TYPES.get(name, SEARCH_ATTRIBUTE_TYPE)


#: Update-with-start (``network create``) arrived in Temporal Server 1.26.
MIN_SERVER_VERSION = (1, 26, 0)

_TIMEOUT = dt.timedelta(seconds=10)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")

#: Server-wide capabilities meshfleet relies on (``GetSystemInfo``): maintenance
#: windows are Temporal Schedules.
_SYSTEM_CAPABILITIES = ("supports_schedules",)
#: Namespace capabilities (``DescribeNamespace``): every control is a workflow update.
_NAMESPACE_CAPABILITIES = ("sync_update", "async_update")


class NamespaceNotReadyError(MeshfleetError):
    """The server or namespace lacks something meshfleet needs and setup cannot add."""


@dataclass(frozen=True)
class SetupReport:
    """What ``prepare_namespace`` found and did."""

    address: str
    namespace: str
    server_version: str
    #: Capability name -> whether the server/namespace has it (every one is required).
    capabilities: dict[str, bool]
    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    #: Attributes that are missing and were not added (``check_only``).
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """The namespace has every attribute now."""
        return not self.missing

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "namespace": self.namespace,
            "serverVersion": self.server_version,
            "capabilities": self.capabilities,
            "searchAttributes": {
                "added": self.added,
                "kept": self.kept,
                "missing": self.missing,
            },
            "ready": self.ready,
            "warnings": self.warnings,
        }


def _type_name(value: int) -> str:
    """``Keyword`` for INDEXED_VALUE_TYPE_KEYWORD (the names the Temporal CLI uses)."""
    raw: str = IndexedValueType.Name(value)  # type: ignore[arg-type]
    return "".join(part.capitalize() for part in raw.removeprefix("INDEXED_VALUE_TYPE_").split("_"))


def parse_server_version(text: str) -> tuple[int, int, int] | None:
    """``(1, 32, 0)`` for ``1.32.0`` or ``v1.32.0-rc1``; None when it is no version."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _rpc_error(error: RPCError, namespace: str, what: str) -> MeshfleetError:
    if error.status is RPCStatusCode.NOT_FOUND:
        return NotFoundError(
            f"namespace {namespace!r} does not exist on this server; create it first "
            f"(temporal operator namespace create --namespace {namespace}, or the Helm "
            "chart's namespace values, or Temporal Cloud's console)"
        )
    if error.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
        return NamespaceNotReadyError(f"{what} was refused ({error.status.name}): {error.message}")
    return UnavailableError(f"{what} failed ({error.status.name}): {error.message}")


async def _check_server(
    client: Client, namespace: str, capabilities: dict[str, bool], warnings: list[str]
) -> str:
    """The server's version; fills ``capabilities`` and raises when one is missing."""
    system = await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=_TIMEOUT)
    version = system.server_version or "unknown"
    for name in _SYSTEM_CAPABILITIES:
        capabilities[name] = bool(getattr(system.capabilities, name))
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace), timeout=_TIMEOUT
    )
    for name in _NAMESPACE_CAPABILITIES:
        capabilities[name] = bool(getattr(described.namespace_info.capabilities, name))

    parsed = parse_server_version(version)
    minimum = ".".join(map(str, MIN_SERVER_VERSION))
    if parsed is None:
        # Temporal Cloud reports its own version scheme: the capabilities decide.
        warnings.append(f"server version {version!r} is not a release number; not compared")
    elif parsed < MIN_SERVER_VERSION:
        raise NamespaceNotReadyError(
            f"Temporal Server {version} is too old: meshfleet needs {minimum} or newer "
            "(workflow update-with-start)"
        )
    lacking = [name for name, present in capabilities.items() if not present]
    if lacking:
        hint = (
            " (set the dynamic config frontend.enableUpdateWorkflowExecution and "
            "frontend.enableUpdateWorkflowExecutionAsyncAccepted to true)"
            if any(name.endswith("_update") for name in lacking)
            else ""
        )
        raise NamespaceNotReadyError(
            f"namespace {namespace!r} on Temporal Server {version} lacks {', '.join(lacking)}{hint}"
        )
    return version


async def prepare_namespace(
    client: Client,
    *,
    attributes: Sequence[str] = SEARCH_ATTRIBUTES,
    check_only: bool = False,
) -> SetupReport:
    """Check the server and namespace of ``client``; add the search attributes it lacks.

    With ``check_only`` nothing is changed: missing attributes are reported in
    ``missing``. Raises :class:`NotFoundError` when the namespace does not exist,
    :class:`NamespaceNotReadyError` when the server is too old, lacks a
    capability, or holds one of the attributes with another type.
    """
    namespace = client.namespace
    address = client.service_client.config.target_host
    capabilities: dict[str, bool] = {}
    warnings: list[str] = []
    try:
        version = await _check_server(client, namespace, capabilities, warnings)
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace), timeout=_TIMEOUT
        )
    except RPCError as error:
        raise _rpc_error(error, namespace, "checking the server") from None

    existing = dict(listed.custom_attributes)
    system = set(listed.system_attributes)
    wrong = [n for n in attributes if n in existing and existing[n] != _wanted_type(n)]
    clashes = [f"{name} is {_type_name(existing[name])}" for name in wrong]
    clashes += [f"{name} is a system attribute" for name in attributes if name in system]
    if clashes:
        needs = ", ".join(
            f"{name} as {_type_name(_wanted_type(name))}"
            for name in attributes
            if name in wrong or name in system
        )
        raise NamespaceNotReadyError(
            f"namespace {namespace!r} already has search attributes of another type "
            f"({'; '.join(clashes)}); meshfleet needs {needs}. "
            "Nothing was changed: remove or rename them "
            "(temporal operator search-attribute remove) and run setup again"
        )
    kept = [name for name in attributes if name in existing]
    missing = [name for name in attributes if name not in existing]
    if check_only or not missing:
        return SetupReport(
            address=address,
            namespace=namespace,
            server_version=version,
            capabilities=capabilities,
            kept=kept,
            missing=missing,
            warnings=warnings,
        )
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: _wanted_type(name) for name in missing},
            ),
            timeout=_TIMEOUT,
        )
    except RPCError as error:
        if error.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            flags = " ".join(
                f"--search-attribute {name}={_type_name(_wanted_type(name))}" for name in missing
            )
            raise NamespaceNotReadyError(
                f"this server does not let this client add search attributes "
                f"({error.status.name}: {error.message}). On Temporal Cloud add them with: "
                f"tcld namespace search-attributes add --namespace {namespace} {flags}"
            ) from None
        raise _rpc_error(error, namespace, "adding search attributes") from None
    return SetupReport(
        address=address,
        namespace=namespace,
        server_version=version,
        capabilities=capabilities,
        added=missing,
        kept=kept,
        warnings=warnings,
    )
