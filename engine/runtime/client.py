"""The Python client: everything the CLI can do, for programs.

```python
from engine.runtime.client import MeshfleetClient

client = await MeshfleetClient.connect()            # embedded server unless TEMPORAL_ADDRESS is set
await client.create_network("prod-mesh", members=["eu-west-1", "eu-west-2"])
```

Methods validate their input before anything reaches Temporal and raise
``engine.domain.errors`` exceptions (``InvalidInputError``, ``NotFoundError``,
``UnavailableError``) with messages meant for a person.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from engine.runtime.connection import Connection, ConnectionSettings, connect
from engine.runtime.settings import task_queue as default_task_queue


class MeshfleetClient:
    """A connection to Temporal plus meshfleet's operations on networks and update runs."""

    def __init__(
        self,
        temporal: Client,
        *,
        task_queue: str | None = None,
        connection: Connection | None = None,
    ) -> None:
        self.temporal = temporal
        self.task_queue = task_queue or default_task_queue()
        self._connection = connection

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        *,
        task_queue: str | None = None,
        state_dir: Path | None = None,
    ) -> MeshfleetClient:
        """Connect the standard Temporal way (flags, then environment, then profile)."""
        connection = await connect(
            ConnectionSettings.resolve(address, namespace), state_dir=state_dir
        )
        return cls(connection.client, task_queue=task_queue, connection=connection)

    @property
    def ui_url(self) -> str | None:
        """The Web UI's base address, when known."""
        return self._connection.ui_url if self._connection else None

    def close(self) -> None:
        """Stop the embedded server if this client started it."""
        if self._connection is not None:
            self._connection.close()

    # --- networks (engine/runtime/client.py, section owned by the network lifecycle) ---

    # --- update runs ---
