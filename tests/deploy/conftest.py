"""Fixtures for the deploy/ tests: the repository's deploy files, parsed, and fresh namespaces.

The manifest and compose tests read files only; the setup tests use the
session's embedded server (``tests/conftest.py``) and register a namespace of
their own on it, so they see a namespace that lacks meshfleet's search
attributes the way a team's new Temporal cluster does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client

from engine.runtime import devserver
from engine.runtime.connection import ConnectionSettings, connect_client
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose"


NamespaceFactory = Callable[[], Coroutine[Any, Any, Client]]


@pytest.fixture
def fresh_namespace(temporal_server: devserver.EmbeddedServer) -> NamespaceFactory:
    """Register a new namespace on the session server; a client bound to it."""

    async def register() -> Client:
        name = f"setup-{uuid.uuid4().hex[:10]}"
        settings = ConnectionSettings(address=temporal_server.address, namespace=name)
        client = await connect_client(temporal_server.address, settings)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
            )
        )

        async def registered() -> bool:  # registration is synchronous; this guards slow disks
            described = await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=name)
            )
            return bool(described.namespace_info.name == name)

        await eventually(registered, timeout=5, what=f"namespace {name} to be described")
        return client

    return register
