"""One way to reach Temporal, for the client, the CLI and the worker alike.

Settings come the standard Temporal way — ``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` and config
profiles (``TEMPORAL_PROFILE``, ``TEMPORAL_CONFIG_FILE``) through
``temporalio.envconfig`` — with command-line flags on top. When no address is
configured anywhere, the embedded server is used, started if needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import TLSConfig

from engine.domain.errors import FieldError, InvalidInputError, UnavailableError
from engine.runtime import devserver
from engine.runtime.settings import state_dir as default_state_dir
from engine.runtime.telemetry import MeshfleetTracingInterceptor


@dataclass(frozen=True)
class ConnectionSettings:
    """Where Temporal is and how to authenticate. ``address=None`` means the embedded server."""

    address: str | None = None
    namespace: str = devserver.DEFAULT_NAMESPACE
    api_key: str | None = field(default=None, repr=False)  # a secret: never printed
    tls: bool | TLSConfig = False
    rpc_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def embedded(self) -> bool:
        return self.address is None

    @classmethod
    def resolve(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        *,
        profile: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ConnectionSettings:
        """Flags first, then Temporal's environment variables and config profile."""
        try:
            loaded = ClientConfigProfile.load(profile, override_env_vars=env)
        except Exception as error:  # the bridge raises plain RuntimeErrors on bad files
            raise InvalidInputError(
                [FieldError(path="TEMPORAL_CONFIG_FILE", message=f"cannot load profile: {error}")]
            ) from None
        connect = loaded.to_client_connect_config()
        resolved_address = address or connect.get("target_host")
        if resolved_address is not None:
            _check_address(resolved_address)
        return cls(
            address=resolved_address,
            namespace=namespace or connect.get("namespace") or devserver.DEFAULT_NAMESPACE,
            api_key=connect.get("api_key"),
            tls=connect.get("tls", False),
            rpc_metadata=dict(connect.get("rpc_metadata") or {}),
        )


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(
            [
                FieldError(
                    path="address", message=f"{address!r} must be HOST:PORT (e.g. localhost:7233)"
                )
            ]
        )


async def connect_client(address: str, settings: ConnectionSettings) -> Client:
    """A client with meshfleet's data converter and tracing, or a clear error."""
    try:
        return await Client.connect(
            address,
            namespace=settings.namespace,
            api_key=settings.api_key,
            tls=settings.tls,
            rpc_metadata=dict(settings.rpc_metadata),
            data_converter=pydantic_data_converter,
            interceptors=[MeshfleetTracingInterceptor()],
        )
    except RuntimeError as error:
        raise UnavailableError(f"cannot reach Temporal at {address}: {error}") from None


@dataclass
class Connection:
    """A connected client, and the embedded server behind it when we started one."""

    client: Client
    settings: ConnectionSettings
    server: devserver.EmbeddedServer | None = None

    @property
    def address(self) -> str:
        return self.client.service_client.config.target_host

    @property
    def ui_url(self) -> str | None:
        """The Web UI's address when known (the embedded server's)."""
        return self.server.ui_url if self.server else None

    def close(self) -> None:
        """Stop the embedded server if this connection started it."""
        if self.server is not None and self.server.owned:
            self.server.stop()


async def connect(
    settings: ConnectionSettings | None = None,
    *,
    state_dir: Path | None = None,
    start_embedded: bool = True,
) -> Connection:
    """Connect to the configured Temporal, or to the embedded server (started if needed)."""
    settings = settings or ConnectionSettings.resolve()
    if settings.address is not None:
        client = await connect_client(settings.address, settings)
        return Connection(client=client, settings=settings)
    server = devserver.EmbeddedServer(
        devserver.ServerConfig(
            state_dir=state_dir or default_state_dir(),
            ports=devserver.ServerPorts.choose(
                devserver.DEFAULT_GRPC_PORT, devserver.DEFAULT_UI_PORT
            ),
            namespace=settings.namespace,
        )
    )
    if start_embedded:
        await server.start()
    client = await connect_client(server.address, settings)
    return Connection(client=client, settings=settings, server=server)
