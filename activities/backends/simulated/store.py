"""Where the simulated world lives: one SQLite file shared by every process.

A worker, the CLI and tests in other processes open the same file. Each
access is one ``BEGIN IMMEDIATE`` transaction (one writer at a time, readers
never see half a change): read the world document, advance and change it,
write it back with the audit entries it produced, commit. WAL mode lets
readers of the audit log proceed while a writer works; the busy timeout
makes concurrent writers queue instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from activities.backends.simulated.model import AuditEntry, AuditEvent, World

#: The file's name inside the state directory.
DATABASE_NAME = "simulated-fleet.sqlite3"
#: How long a writer waits for another process's transaction (seconds).
BUSY_TIMEOUT_SECONDS = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS world (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    sim_time REAL NOT NULL,
    cluster TEXT,
    event TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_event ON audit (event);
CREATE TABLE IF NOT EXISTS world_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
"""


class WorldStore:
    """Transactions over the world document and the append-only audit log."""

    def __init__(self, path: Path, *, keep_open: bool = False) -> None:
        self.path = path
        #: Reuse one connection (the caller serializes its accesses): opening one and
        #: setting it up costs more than a small transaction.
        self._keep_open = keep_open
        self._kept: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=not self._keep_open,
        )
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.executescript(_SCHEMA)
        return connection

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one access, closed afterwards (unless kept open)."""
        if self._keep_open:
            if self._kept is None:
                self._kept = self._connect()
            yield self._kept
            return
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        with self.connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    @staticmethod
    def read_world(connection: sqlite3.Connection) -> World | None:
        row = connection.execute("SELECT document FROM world WHERE id = 1").fetchone()
        return None if row is None else World.model_validate_json(row[0])

    @staticmethod
    def read_generation(connection: sqlite3.Connection) -> int:
        """How many times the world was written: a process that cached it knows if it is stale."""
        row = connection.execute("SELECT value FROM world_generation WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _bump_generation(connection: sqlite3.Connection) -> int:
        row = connection.execute(
            "INSERT INTO world_generation (id, value) VALUES (1, 1) "
            "ON CONFLICT (id) DO UPDATE SET value = value + 1 RETURNING value"
        ).fetchone()
        return int(row[0])

    @classmethod
    def write_world(cls, connection: sqlite3.Connection, world: World) -> int:
        """Store the world; its new generation."""
        connection.execute(
            "INSERT INTO world (id, document) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET document = excluded.document",
            (world.model_dump_json(by_alias=True),),
        )
        return cls._bump_generation(connection)

    @staticmethod
    def append_audit(connection: sqlite3.Connection, entries: list[AuditEntry]) -> None:
        connection.executemany(
            "INSERT INTO audit (at, sim_time, cluster, event, details) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    e.at.isoformat(),
                    e.sim_time,
                    e.cluster,
                    e.event.value,
                    json.dumps(e.details, default=str),
                )
                for e in entries
            ],
        )

    @classmethod
    def clear(cls, connection: sqlite3.Connection) -> None:
        connection.execute("DELETE FROM world")
        connection.execute("DELETE FROM audit")
        cls._bump_generation(connection)

    @staticmethod
    def read_audit(
        connection: sqlite3.Connection,
        after: int = 0,
        event: AuditEvent | None = None,
        cluster: str | None = None,
    ) -> list[AuditEntry]:
        query = "SELECT seq, at, sim_time, cluster, event, details FROM audit WHERE seq > ?"
        params: list[object] = [after]
        if event is not None:
            query += " AND event = ?"
            params.append(event.value)
        if cluster is not None:
            query += " AND cluster = ?"
            params.append(cluster)
        query += " ORDER BY seq"
        return [
            AuditEntry(
                seq=seq,
                at=at,
                sim_time=sim_time,
                cluster=row_cluster,
                event=AuditEvent(row_event),
                details=json.loads(details),
            )
            for seq, at, sim_time, row_cluster, row_event, details in connection.execute(
                query, params
            )
        ]
