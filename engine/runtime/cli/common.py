"""What every CLI command shares: global options, output, and error handling."""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from engine.domain.errors import (
    FieldError,
    InvalidInputError,
    MeshfleetError,
    UnavailableError,
    field_errors_from_pydantic,
)

if TYPE_CHECKING:
    from engine.runtime.client import MeshfleetClient

T = TypeVar("T")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


class OutputFormat(str, enum.Enum):
    TABLE = "table"
    JSON = "json"


class LogFormat(str, enum.Enum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


@dataclass
class GlobalOptions:
    """The options given before the command (``meshfleet --output json plan ...``)."""

    address: str | None = None
    namespace: str | None = None
    output: OutputFormat = OutputFormat.TABLE
    log_format: LogFormat = LogFormat.AUTO


def global_options(ctx: typer.Context) -> GlobalOptions:
    """The global options of this invocation (defaults when run outside the main app)."""
    root = ctx.find_root()
    options = root.obj if isinstance(root.obj, GlobalOptions) else None
    return options or GlobalOptions()


def resolve_output(ctx: typer.Context, local: OutputFormat | None) -> OutputFormat:
    """A command's own ``--output`` wins over the global one."""
    return local if local is not None else global_options(ctx).output


def command_prefix(ctx: typer.Context) -> str:
    """``meshfleet`` plus the global connection flags this command was given, for hints."""
    options = global_options(ctx)
    parts = ["meshfleet"]
    if options.address:
        parts += ["--address", options.address]
    if options.namespace:
        parts += ["--namespace", options.namespace]
    return " ".join(parts)


def print_json(value: Any) -> None:
    """Print JSON on stdout, plainly (no rich markup), for scripts."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def report_invalid(errors: list[FieldError], output: OutputFormat, source: str | None) -> NoReturn:
    """Every validation error at once; JSON as ``{"errors": [{path, message}]}``."""
    if output is OutputFormat.JSON:
        print_json({"errors": [e.model_dump() for e in errors]})
    else:
        where = f" in {source}" if source else ""
        stderr.print(f"[bold red]error:[/] {len(errors)} problem(s){where}:", highlight=False)
        for error in errors:
            stderr.print(f"  - {error}", highlight=False, markup=False)
    raise typer.Exit(InvalidInputError.exit_code)


def run_command(ctx: typer.Context, body: Callable[[], T], output: OutputFormat | None = None) -> T:
    """Run a command body, turning meshfleet's errors into a line and an exit code."""
    output = output or global_options(ctx).output
    try:
        return body()
    except InvalidInputError as error:
        report_invalid(error.errors, output, error.source)
    except ValidationError as error:
        report_invalid(field_errors_from_pydantic(error), output, None)
    except MeshfleetError as error:
        fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise typer.Exit(130) from None


def run_async(
    ctx: typer.Context,
    body: Callable[[], Coroutine[Any, Any, T]],
    output: OutputFormat | None = None,
) -> T:
    """``run_command`` for async bodies."""
    return run_command(ctx, lambda: asyncio.run(body()), output)


async def with_client(
    ctx: typer.Context, action: Callable[[MeshfleetClient], Coroutine[Any, Any, T]]
) -> T:
    """Connect (never starting a server: work needs a running worker too), act, close."""
    from engine.runtime.client import MeshfleetClient
    from engine.runtime.connection import ConnectionSettings, connect

    options = global_options(ctx)
    settings = ConnectionSettings.resolve(options.address, options.namespace)
    try:
        connection = await connect(settings, start_embedded=False)
    except UnavailableError as error:
        hint = "" if settings.address else " (start it with: meshfleet server)"
        raise UnavailableError(f"{error}{hint}") from None
    try:
        return await action(MeshfleetClient(connection.client, connection=connection))
    finally:
        connection.close()
