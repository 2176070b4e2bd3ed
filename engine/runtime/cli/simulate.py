"""``meshfleet simulate`` and ``meshfleet demo``: a whole update run on a simulated fleet.

``simulate`` rehearses the user's own strategy on a model of their fleet;
``demo`` is the same with a bundled fleet and strategy. The logic lives in
``engine.runtime.simulate``; this module parses flags and shows progress:
a live view on a terminal, plain lines otherwise, and nothing but the report
on stdout with ``--output json``. ``--html FILE`` also draws the run
(``engine.runtime.report_html``); the demo always does, and says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from temporalio.exceptions import ApplicationError

from engine.domain.errors import InvalidInputError
from engine.domain.run import RunStatus, State
from engine.runtime import devserver
from engine.runtime.cli.common import (
    OutputFormat,
    global_options,
    print_json,
    resolve_output,
    run_async,
    stderr,
    stdout,
)
from engine.runtime.cli.run import member_counts, print_progress_lines, render_status, watch_live
from engine.runtime.connection import ConnectionSettings
from engine.runtime.demo import FLEET, STRATEGY, TARGET, demo_file
from engine.runtime.runs import UpdateRunHandle
from engine.runtime.settings import state_dir as default_state_dir
from engine.runtime.simulate import (
    Observer,
    Rehearsal,
    RehearsalEvents,
    RehearsalResult,
    prepare_rehearsal,
    rehearse,
)
from engine.runtime.timeline import html_file_problem, write_html

#: How long the demo's approval gate stays open before the demo approves it.
DEMO_APPROVAL_PAUSE = dt.timedelta(seconds=5)
#: The demo's picture of its run, in the state directory unless ``--html`` says elsewhere.
DEMO_TIMELINE = "demo-timeline.html"


class _Events(RehearsalEvents):
    """Notes go to stdout, or to stderr when stdout carries the JSON report."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def note(self, text: str) -> None:
        self.console.print(f"[dim]·[/] {text}", highlight=False)

    def gate_waiting(self, gate_id: str, display_name: str, command: str) -> None:
        self.console.print(
            f"[bold yellow]gate {gate_id} ({display_name}) is waiting for approval;[/] "
            f"approve it with:\n  {command}",
            highlight=False,
        )


async def _silently(handle: UpdateRunHandle) -> RunStatus:
    return await handle.result()


def _observer(output: OutputFormat) -> Observer:
    if output is OutputFormat.JSON:
        return _silently
    return watch_live if stdout.is_terminal else print_progress_lines


class _OneLineFailures(logging.Filter):
    """An activity failing on purpose (an injected fault) is one line, not an SDK traceback.

    The run handles these failures itself (the member fails, the budget decides);
    the line says which step of which member failed and why.
    """

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, ApplicationError):
            return True
        details = getattr(record, "temporal_activity", None) or {}
        step = details.get("activity_type", "an activity")
        where = str(details.get("workflow_id", "")).rsplit("/", 1)[-1]
        self.console.print(
            f"[dim]·[/] {step} of {where or '?'} failed: {escape(error.message)}", highlight=False
        )
        return False


@contextlib.contextmanager
def one_line_activity_failures(console: Console) -> Iterator[None]:
    """While a rehearsal runs, print failed activities as one line each on ``console``."""
    logger = logging.getLogger("temporalio.activity")
    quiet = _OneLineFailures(console)
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def print_summary(result: RehearsalResult, shown_live: bool, *, kept_up: bool = False) -> None:
    """The end of a rehearsal, for a person: final status, members at the target, the link."""
    status = result.status
    if not shown_live:
        stdout.print(render_status(status))
    members = status.members()
    target = status.target.kubernetes_version if status.target else "?"
    cilium = status.target.cilium_version if status.target else "?"
    failed = [m for _, _, m in members if m.state is State.FAILED]
    style = "green" if status.state is State.COMPLETED else "bold red"
    stdout.print()
    stdout.print(f"[{style}]run {status.network}/{status.name}: {status.state.value}[/]")
    stdout.print(
        f"  target Kubernetes {target} (Cilium {cilium}): {member_counts(status)}",
        highlight=False,
    )
    for member in failed:
        stdout.print(f"  [red]failed[/] {member.name}: {member.message}", highlight=False)
    if status.start_time and status.completed_time:
        took = (status.completed_time - status.start_time).total_seconds()
        stdout.print(f"  took {took:.1f}s", highlight=False)
    report = result.report
    violations = report["violations"]
    stdout.print(
        f"  continuity violations: {len(violations)}; "
        f"workflows: {report['history']['workflows']}, "
        f"largest history: {report['history']['maxEvents']} events",
        highlight=False,
    )
    for note in result.notes:
        stdout.print(f"  note: {note}", highlight=False)
    if result.ui_url:
        lifetime = (
            ""
            if kept_up
            else " (served by this command's own server: gone when it exits; "
            "add --keep-server to keep it up)"
        )
        stdout.print(f"  Web UI: {result.ui_url}{lifetime}", highlight=False)


async def _until_interrupted() -> None:
    """Wait for Ctrl-C (or SIGTERM) without turning it into an error."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _in_a_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _run(
    ctx: typer.Context,
    output: OutputFormat,
    prepare: RehearsalFactory,
    report_file: Path | None,
    keep_up: bool,
    html_file: Path | None = None,
) -> None:
    options = global_options(ctx)
    console = stderr if output is OutputFormat.JSON else stdout

    async def body() -> int:
        rehearsal = prepare()
        for warning in rehearsal.plan.warnings:
            console.print(f"[bold yellow]plan warning:[/] {escape(str(warning))}", highlight=False)
        settings = ConnectionSettings.resolve(options.address, options.namespace)
        devserver.install_signal_handlers()

        async def afterwards(result: RehearsalResult) -> None:
            if report_file is not None:
                text = json.dumps(result.report, indent=2) + "\n"
                await asyncio.to_thread(report_file.write_text, text)
            if html_file is not None and result.timeline is not None:
                await asyncio.to_thread(write_html, html_file, result.timeline)
            if output is OutputFormat.JSON:
                print_json(result.report)
            else:
                print_summary(result, shown_live=stdout.is_terminal, kept_up=keep_up)
                if report_file is not None:
                    stdout.print(f"  report: {report_file}", highlight=False)
            if html_file is not None:
                console.print(f"  timeline: {html_file}", highlight=False)
            if keep_up and result.ui_url:
                console.print(
                    "The server and the worker stay up for inspection in the Web UI; "
                    "press Ctrl-C to stop.",
                    highlight=False,
                )
                await _until_interrupted()

        with one_line_activity_failures(console):
            result = await rehearse(
                rehearsal,
                settings,
                default_state_dir(),
                observe=_observer(output),
                events=_Events(console),
                afterwards=afterwards,
            )
        return result.exit_code

    code = run_async(ctx, body, output)
    if code:
        raise typer.Exit(code)


class RehearsalFactory:
    """Builds the rehearsal inside the command's error handling (so bad input exits 2)."""

    def __init__(
        self,
        fleet: Path,
        strategy: Path,
        target: str,
        network: str | None,
        time_scale: float | None,
        approve_all: bool,
        approve_after: dt.timedelta = dt.timedelta(0),
        html_file: Path | None = None,
    ) -> None:
        self.args = (fleet, strategy, target)
        self.html_file = html_file
        self.network = network
        self.time_scale = time_scale
        self.approve_all = approve_all
        self.approve_after = approve_after

    def __call__(self) -> Rehearsal:
        problem = html_file_problem(self.html_file) if self.html_file else None
        problems = [problem] if problem else []
        try:
            rehearsal = prepare_rehearsal(
                *self.args,
                network=self.network,
                time_scale=self.time_scale,
                approve_all=self.approve_all,
                approve_after=self.approve_after,
            )
        except InvalidInputError as error:
            raise InvalidInputError(error.errors + problems) from None
        if problems:
            raise InvalidInputError(problems)
        return rehearsal


def simulate(
    ctx: typer.Context,
    fleet: Path = typer.Option(..., "--fleet", help="A SimulatedFleet file: your fleet's model."),
    strategy: Path = typer.Option(
        ..., "--strategy", help="Strategy file: native YAML/JSON or Azure Fleet JSON."
    ),
    target: str = typer.Option(..., "--target", help="Target Kubernetes version (1.33)."),
    network: str | None = typer.Option(
        None, "--network", help="Network of the fleet file to update (default: its only one)."
    ),
    report: Path | None = typer.Option(None, "--report", help="Write the JSON report here."),
    html: Path | None = typer.Option(
        None, "--html", help="Write the run as a picture here: one self-contained HTML file."
    ),
    approve_all: bool = typer.Option(
        False, "--approve-all", help="Approve every Approval gate as it opens (unattended)."
    ),
    time_scale: float | None = typer.Option(
        None,
        "--time-scale",
        help="Real seconds per simulated second for operations and soaks "
        "(default: the fleet file's timeScale; 0 = instant).",
    ),
    output: OutputFormat | None = typer.Option(
        None, "--output", help="table or json (json: only the report on stdout)."
    ),
    keep_server: bool = typer.Option(
        False,
        "--keep-server",
        help="At the end, keep the private server and its Web UI up until Ctrl-C.",
    ),
) -> None:
    """Rehearse an update run of a simulated fleet, start to end, and report what happened.

    Exit code 0 when the run Completed, 1 when it Failed or Stopped, 2 for invalid input.
    """
    out = resolve_output(ctx, output)
    factory = RehearsalFactory(
        fleet, strategy, target, network, time_scale, approve_all, html_file=html
    )
    _run(ctx, out, factory, report, keep_up=keep_server, html_file=html)


def demo(
    ctx: typer.Context,
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Exit at once at the end instead of keeping the server up."
    ),
    time_scale: float | None = typer.Option(
        None, "--time-scale", help="Override the demo's time scale (0.02 by default)."
    ),
    report: Path | None = typer.Option(None, "--report", help="Write the JSON report here."),
    html: Path | None = typer.Option(
        None,
        "--html",
        help="Where to write the run as a picture (default: demo-timeline.html "
        "in the state directory).",
    ),
    output: OutputFormat | None = typer.Option(None, "--output", help="table or json."),
) -> None:
    """A staged update of a 14-cluster ClusterMesh on a simulated fleet, in about two minutes.

    Canaries first, an approval (approved after a short pause), Europe and the
    Americas in parallel, then Asia-Pacific with a soak. In a terminal the
    server stays up for the Web UI until Ctrl-C (--no-wait to exit at once).
    """
    out = resolve_output(ctx, output)
    html_file = (html or default_state_dir() / DEMO_TIMELINE).absolute()
    factory = RehearsalFactory(
        demo_file(FLEET),
        demo_file(STRATEGY),
        TARGET,
        None,
        time_scale,
        approve_all=True,
        approve_after=DEMO_APPROVAL_PAUSE,
        html_file=html_file,
    )
    keep_up = not no_wait and _in_a_terminal()
    _run(ctx, out, factory, report, keep_up=keep_up, html_file=html_file)


def register(app: typer.Typer) -> None:
    """Add ``meshfleet simulate`` and ``meshfleet demo`` to the main app."""
    app.command()(simulate)
    app.command()(demo)
