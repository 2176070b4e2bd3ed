"""``meshfleet sim``: the simulated fleet — load it, look at it, break it, read its audit log.

The world lives in the state directory (``$MESHFLEET_STATE_DIR`` or
``./.meshfleet``), shared with any worker using the simulated backend.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table

from activities.backends.simulated import (
    AuditEntry,
    AuditEvent,
    SimulatedFleetBackend,
    World,
    example_names,
    example_text,
)
from engine.domain.errors import FieldError, InvalidInputError, field_errors_from_pydantic
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.runtime.cli.common import (
    OutputFormat,
    print_json,
    resolve_output,
    run_command,
    stdout,
)
from engine.runtime.fleet_file import load_fleet
from engine.runtime.settings import state_dir as default_state_dir

sim_app = typer.Typer(
    name="sim",
    help="The simulated fleet: load a fleet file, inspect it, inject faults, read the audit log.",
    no_args_is_help=True,
)

_STATE_DIR_HELP = "Where the simulated world lives (default: $MESHFLEET_STATE_DIR or ./.meshfleet)."
_OUTPUT_HELP = "table or json (overrides the global --output)."


def _backend(state_dir: Path | None) -> SimulatedFleetBackend:
    return SimulatedFleetBackend(state_dir or default_state_dir())


@sim_app.command("init")
def init(
    ctx: typer.Context,
    example: str = typer.Option(
        "demo", "--example", help=f"Which starter fleet ({', '.join(example_names())})."
    ),
) -> None:
    """Print a starter fleet file to adapt: `meshfleet sim init > fleet.yaml`."""
    text = run_command(ctx, lambda: example_text(example))
    typer.echo(text, nl=False)


@sim_app.command("load")
def load(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A SimulatedFleet file (YAML or JSON)."),
    reset: bool = typer.Option(False, "--reset", help="Replace the world that is loaded."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_DIR_HELP),
) -> None:
    """Validate a fleet file and make it the simulated world (simTime starts at 0).

    The clusters start unmeshed: networks exist only as network workflows, so
    the file's ``networks:`` are a description, printed as the ``network
    create`` commands that make them (``sim show`` and ``network show`` then
    agree on every membership).
    """

    def body() -> None:
        fleet = load_fleet(file)
        described = fleet.spec.networks
        unmeshed = fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"networks": []})})
        backend = _backend(state_dir)
        backend.load(unmeshed, reset=reset)
        stdout.print(
            f"Loaded fleet {fleet.metadata.name!r}: {len(fleet.spec.clusters)} clusters "
            f"(none in a network yet), {len(fleet.spec.global_services)} global services "
            f"(timeScale {fleet.spec.time_scale}) into {backend.path}",
            highlight=False,
        )
        for network in described:
            members = " ".join(f"--member {m}" for m in network.members)
            stdout.print(
                f"The file describes network {network.name!r} ({len(network.members)} members); "
                f"with a worker running, create it with:\n  meshfleet network create "
                f"{network.name} {members}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    run_command(ctx, body)


def _summary(world: World) -> dict[str, object]:
    """The JSON form of ``sim show``."""
    return {
        "fleet": world.fleet.metadata.name,
        "simTime": world.now,
        "timeScale": world.time_scale,
        "clusters": [
            {
                "name": name,
                "network": state.network,
                "meshEnabled": state.mesh_enabled_at is not None,
                "kubernetesVersion": state.kubernetes_version,
                "ciliumVersion": state.cilium_version,
                "peers": sorted(state.peers),
            }
            for name, state in world.clusters.items()
        ],
        "operations": [op.to_json_dict() for op in world.operations.values()],
        "faults": [f.to_json_dict() for f in world.faults],
        "violations": [v.to_json_dict() for v in world.violations],
    }


@sim_app.command("show")
def show(
    ctx: typer.Context,
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_DIR_HELP),
) -> None:
    """The simulated world now: clusters, operations, faults and violations."""
    fmt = resolve_output(ctx, output)

    def body() -> None:
        backend = _backend(state_dir)
        world = backend.world()
        if fmt is OutputFormat.JSON:
            print_json(_summary(world))
            return
        stdout.print(
            f"Fleet {world.fleet.metadata.name!r} at simTime {world.now:.1f}s "
            f"(timeScale {world.time_scale})",
            highlight=False,
        )
        clusters = Table("cluster", "network", "kubernetes", "cilium", "peers", "running")
        running = {
            op.cluster: op.kind.value
            for op in world.operations.values()
            if op.state.value == "Running"
        }
        for name, state in world.clusters.items():
            clusters.add_row(
                name,
                state.network or "-",
                state.kubernetes_version,
                state.cilium_version,
                str(len(state.peers)),
                running.get(name, "-"),
            )
        stdout.print(clusters)
        active = [f for f in world.faults if not f.cleared and f.remaining > 0]
        if active:
            faults = Table("id", "cluster", "kind", "trigger", "left")
            for f in active:
                trigger = f.fault.on.value if f.fault.on else f"atSimTime {f.fault.at_sim_time}"
                faults.add_row(str(f.id), f.cluster, f.fault.kind.value, trigger, str(f.remaining))
            stdout.print(faults)
        open_violations = [v for v in world.violations if v.ended is None]
        stdout.print(
            f"{len(world.violations)} continuity violation(s), {len(open_violations)} ongoing",
            highlight=False,
        )

    run_command(ctx, body, fmt)


fault_app = typer.Typer(name="fault", help="Inject or clear faults.", no_args_is_help=True)
sim_app.add_typer(fault_app)


@fault_app.command("add")
def fault_add(
    ctx: typer.Context,
    cluster: str = typer.Argument(..., help="The cluster the fault hits."),
    kind: FaultKind = typer.Option(..., "--kind", help="What happens."),
    on: FaultTrigger | None = typer.Option(None, "--on", help="Fire on this event..."),
    at_sim_time: float | None = typer.Option(
        None, "--at-sim-time", help="...or at this simulated time (seconds; now if past)."
    ),
    message: str = typer.Option("injected fault", "--message", help="For 'fail'."),
    times: int = typer.Option(1, "--times", help="How many triggers it fires on."),
    factor: float = typer.Option(2.0, "--factor", help="For 'slow': duration multiplier."),
    peers: list[str] | None = typer.Option(
        None, "--peer", help="For 'meshPartition': a peer to cut off (repeatable; default all)."
    ),
    duration: str | None = typer.Option(
        None, "--duration", help="How long the window lasts ('60s'; default until cleared)."
    ),
    service: str | None = typer.Option(
        None, "--service", help="For 'endpointsLost': namespace/name (default every service)."
    ),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_DIR_HELP),
) -> None:
    """Inject a fault into the running simulation."""
    fmt = resolve_output(ctx, output)

    def body() -> None:
        document: dict[str, object] = {
            "kind": kind.value,
            "message": message,
            "times": times,
            "factor": factor,
        }
        if on is not None:
            document["on"] = on.value
        if at_sim_time is not None:
            document["atSimTime"] = at_sim_time
        if peers:
            document["peers"] = peers
        if duration is not None:
            document["duration"] = duration
        if service is not None:
            document["service"] = service
        fault = _validate_fault(document)
        record = _backend(state_dir).add_fault(cluster, fault)
        if fmt is OutputFormat.JSON:
            print_json(record.to_json_dict())
        else:
            stdout.print(f"Added fault {record.id} ({kind.value}) on {cluster}", highlight=False)

    run_command(ctx, body, fmt)


def _validate_fault(document: dict[str, object]) -> Fault:
    try:
        return Fault.model_validate(document)
    except ValidationError as error:
        problems = field_errors_from_pydantic(error)
        raise InvalidInputError(
            [
                FieldError(path="--" + (p.path or "on/--at-sim-time"), message=p.message)
                for p in problems
            ]
        ) from None


@fault_app.command("clear")
def fault_clear(
    ctx: typer.Context,
    cluster: str | None = typer.Argument(None, help="Only this cluster's faults."),
    fault_id: int | None = typer.Option(None, "--id", help="Only the fault with this id."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_DIR_HELP),
) -> None:
    """Clear faults (all, a cluster's, or one): windows close and hung operations resume."""

    def body() -> None:
        cleared = _backend(state_dir).clear_faults(cluster, fault_id)
        stdout.print(f"Cleared {len(cleared)} fault(s)", highlight=False)

    run_command(ctx, body)


def _print_entries(entries: list[AuditEntry], fmt: OutputFormat) -> None:
    for entry in entries:
        if fmt is OutputFormat.JSON:
            typer.echo(json.dumps(entry.to_json_dict()))
        else:
            details = " ".join(f"{k}={v}" for k, v in entry.details.items())
            stdout.print(
                f"{entry.at:%Y-%m-%dT%H:%M:%SZ} t={entry.sim_time:>9.1f}s "
                f"{entry.cluster or '-':<16} {entry.event.value:<28} {details}",
                highlight=False,
                markup=False,
            )


@sim_app.command("audit")
def audit(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new entries."),
    event: AuditEvent | None = typer.Option(None, "--event", help="Only this event."),
    cluster: str | None = typer.Option(None, "--cluster", help="Only this cluster."),
    output: OutputFormat | None = typer.Option(
        None, "--output", help="table or json (a list; with --follow one object per line)."
    ),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_DIR_HELP),
) -> None:
    """The audit log: every state change and violation, oldest first."""
    fmt = resolve_output(ctx, output)

    def body() -> None:
        backend = _backend(state_dir)
        if not follow and fmt is OutputFormat.JSON:
            print_json([e.to_json_dict() for e in backend.audit(event=event, cluster=cluster)])
            return
        last = 0
        while True:
            entries = backend.audit(after=last, event=event, cluster=cluster)
            _print_entries(entries, fmt)
            if entries:
                last = entries[-1].seq
            if not follow:
                return
            time.sleep(0.5)

    run_command(ctx, body, fmt)


def register(app: typer.Typer) -> None:
    """Add ``meshfleet sim`` to the main app."""
    app.add_typer(sim_app)
