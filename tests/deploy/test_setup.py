"""``meshfleet setup`` on a running server: adds what is missing, keeps what exists.

Runs on the session's embedded server, in namespaces registered by the test
(the dev server registers meshfleet's attributes on its own namespace at
start, so a new namespace is the way to see a server that lacks them).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from engine.domain.errors import NotFoundError
from engine.runtime import devserver
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.setup import (
    SEARCH_ATTRIBUTE_TYPES,
    NamespaceNotReadyError,
    parse_server_version,
    prepare_namespace,
)
from tests.deploy.conftest import NamespaceFactory
from tests.runtime.serverproc import MESHFLEET


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        parsed = json.loads(self.stdout)
        assert isinstance(parsed, dict)
        return parsed


async def meshfleet(address: str, namespace: str, *args: str) -> Ran:
    """The real CLI in a subprocess, pointed at ``address``/``namespace``."""
    process = await asyncio.create_subprocess_exec(
        MESHFLEET,
        "--address",
        address,
        "--namespace",
        namespace,
        *args,
        env={**os.environ, "TEMPORAL_ADDRESS": "", "TEMPORAL_NAMESPACE": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def custom_attributes(client: Client) -> dict[str, int]:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return dict(listed.custom_attributes)


async def test_setup_adds_every_attribute_with_its_type_then_changes_nothing(
    temporal_server: devserver.EmbeddedServer, fresh_namespace: NamespaceFactory
) -> None:
    """First run adds all (JSON report), the second adds none and keeps all, each with its type."""
    client = await fresh_namespace()
    assert not set(devserver.SEARCH_ATTRIBUTES) & set(await custom_attributes(client))

    first = await meshfleet(temporal_server.address, client.namespace, "setup", "--output", "json")
    assert first.code == 0, first.stderr
    report = first.json()
    assert report["namespace"] == client.namespace
    assert report["searchAttributes"] == {
        "added": list(devserver.SEARCH_ATTRIBUTES),
        "kept": [],
        "missing": [],
    }
    assert report["ready"] is True
    assert report["capabilities"] == {
        "supports_schedules": True,
        "sync_update": True,
        "async_update": True,
    }
    assert parse_server_version(str(report["serverVersion"])) is not None
    assert await custom_attributes(client) == SEARCH_ATTRIBUTE_TYPES

    second = await meshfleet(temporal_server.address, client.namespace, "setup", "--output", "json")
    assert second.code == 0, second.stderr
    assert second.json()["searchAttributes"] == {
        "added": [],
        "kept": list(devserver.SEARCH_ATTRIBUTES),
        "missing": [],
    }
    assert await custom_attributes(client) == SEARCH_ATTRIBUTE_TYPES


async def test_setup_on_the_embedded_servers_own_namespace_keeps_everything(
    temporal_server: devserver.EmbeddedServer,
) -> None:
    """The dev server registered them at start: setup adds nothing, twice, in table form."""
    for _ in range(2):
        ran = await meshfleet(temporal_server.address, devserver.DEFAULT_NAMESPACE, "setup")
        assert ran.code == 0, ran.stderr
        assert "added" not in ran.stdout
        assert ran.stdout.count("kept") == len(devserver.SEARCH_ATTRIBUTES)
        assert "is ready for meshfleet" in ran.stdout


async def test_setup_adds_only_the_missing_ones(fresh_namespace: NamespaceFactory) -> None:
    """An attribute a colleague registered already is kept; the other three are added."""
    client = await fresh_namespace()
    first, *rest = devserver.SEARCH_ATTRIBUTES
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={first: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
        )
    )
    report = await prepare_namespace(client)
    assert report.kept == [first]
    assert report.added == rest
    assert report.ready


async def test_check_reports_missing_attributes_and_changes_nothing(
    temporal_server: devserver.EmbeddedServer, fresh_namespace: NamespaceFactory
) -> None:
    """``--check`` exits 1 and names every missing attribute; the namespace stays as it was."""
    client = await fresh_namespace()
    ran = await meshfleet(
        temporal_server.address, client.namespace, "setup", "--check", "--output", "json"
    )
    assert ran.code == 1
    assert ran.json()["searchAttributes"] == {
        "added": [],
        "kept": [],
        "missing": list(devserver.SEARCH_ATTRIBUTES),
    }
    assert ran.json()["ready"] is False
    assert not set(devserver.SEARCH_ATTRIBUTES) & set(await custom_attributes(client))


async def test_an_attribute_of_another_type_is_an_error_that_changes_nothing(
    temporal_server: devserver.EmbeddedServer, fresh_namespace: NamespaceFactory
) -> None:
    """MeshfleetStage as Int: setup names it and its type, and adds none of the others."""
    client = await fresh_namespace()
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={"MeshfleetStage": IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    with pytest.raises(NamespaceNotReadyError, match="MeshfleetStage is Int"):
        await prepare_namespace(client)
    assert await custom_attributes(client) == {
        "MeshfleetStage": IndexedValueType.INDEXED_VALUE_TYPE_INT
    }

    ran = await meshfleet(temporal_server.address, client.namespace, "setup")
    assert ran.code == 1
    assert "MeshfleetStage is Int" in ran.stderr
    assert "Nothing was changed" in ran.stderr


async def test_a_namespace_that_does_not_exist_is_named_in_the_error(
    temporal_server: devserver.EmbeddedServer,
) -> None:
    """No namespace is created by setup: it says which one is missing and how to create it."""
    settings = ConnectionSettings(address=temporal_server.address, namespace="no-such-namespace")
    client = await connect_client(temporal_server.address, settings)
    with pytest.raises(NotFoundError, match="'no-such-namespace' does not exist"):
        await prepare_namespace(client)


async def test_an_unreachable_server_is_one_line_and_exit_code_1() -> None:
    """Nothing listens on the port: setup fails fast with a line, never a traceback."""
    port = devserver.free_port()
    ran = await meshfleet(f"127.0.0.1:{port}", "default", "setup")
    assert ran.code == 1
    assert "Traceback" not in ran.stderr
    assert "cannot reach Temporal" in ran.stderr


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1.32.0", (1, 32, 0)), ("v1.26.2-rc.1", (1, 26, 2)), ("1.29", (1, 29, 0)), ("cloud", None)],
)
def test_server_versions_are_read_from_release_numbers(
    text: str, parsed: tuple[int, int, int] | None
) -> None:
    """Release numbers compare as tuples; anything else (Temporal Cloud) is not compared."""
    assert parse_server_version(text) == parsed
