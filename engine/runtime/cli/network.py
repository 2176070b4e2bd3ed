"""``meshfleet network``: create, join, remove, delete, show, list, services and release.

Every command talks to the network's workflow through the client, on the
configured Temporal (``--address``/``TEMPORAL_ADDRESS``, else the embedded
server, which must already be running with a worker: ``meshfleet server`` and
``meshfleet worker``). Membership commands wait for their result; when an
update run holds the network they return at once and say the change is queued.
Exit codes: 0 when every member was joined, removed or queued; 1 when one was
rejected or failed (the output says which rule); 2 for a request that breaks a
rule before it is sent; 1 for an unknown network or an unreachable server.
"""

from __future__ import annotations

import typer
from rich.table import Table

from engine.domain.errors import FieldError, InvalidInputError
from engine.domain.network import (
    MembershipOutcome,
    NetworkDescription,
    NetworkSummary,
    OperationResult,
)
from engine.domain.services import ServicesReport
from engine.runtime.cli.common import (
    OutputFormat,
    print_json,
    report_invalid,
    resolve_output,
    run_async,
    stderr,
    stdout,
    with_client,
)
from engine.runtime.client import MeshfleetClient

network_app = typer.Typer(
    name="network",
    help="Cross-cluster networks (Cilium ClusterMesh): create, join, remove, delete, inspect.",
    no_args_is_help=True,
)

_OUTPUT_HELP = "table or json (overrides the global --output)."
_OUTCOME_STYLE = {
    MembershipOutcome.JOINED: "green",
    MembershipOutcome.REMOVED: "green",
    MembershipOutcome.QUEUED: "yellow",
    MembershipOutcome.REJECTED: "red",
    MembershipOutcome.FAILED: "red",
}


def _all_rejected(result: OperationResult) -> bool:
    """Every member of the operation broke a rule (nothing joined, nothing failed or queued)."""
    return bool(result.members) and all(
        m.outcome is MembershipOutcome.REJECTED for m in result.members
    )


def _print_result(
    result: OperationResult, output: OutputFormat, *, exit_on_failure: bool = True
) -> None:
    """An operation's result; exits 1 when a member was rejected or failed."""
    if output is OutputFormat.JSON:
        print_json(result.to_json_dict())
    else:
        if result.queued:
            stdout.print(
                f"[yellow]queued[/]: update run {result.holder!r} holds network "
                f"{result.network!r}; {result.kind.value} {result.operation} runs when it "
                "releases it",
                highlight=False,
            )
        else:
            stdout.print(
                f"network {result.network}: {result.kind.value} {result.operation} -> "
                f"{result.status.value}",
                highlight=False,
            )
        for member in result.members:
            style = _OUTCOME_STYLE[member.outcome]
            rule = f" [{member.rule.value}]" if member.rule else ""
            cid = f" (cluster id {member.cluster_id})" if member.cluster_id else ""
            note = f": {member.message}" if member.message and not result.queued else ""
            stdout.print(
                f"  [{style}]{member.outcome.value:<8}[/] {member.cluster}{cid}{rule}{note}",
                highlight=False,
            )
        for link in result.not_ready_links:
            stdout.print(f"  not ready: {link.viewer} -> {link.peer}: {link.reason}", markup=False)
        if result.message and not result.queued:
            stdout.print(f"  {result.message}", markup=False, highlight=False)
        if result.deleted:
            stdout.print(f"network {result.network} deleted", highlight=False)
    bad = (MembershipOutcome.REJECTED, MembershipOutcome.FAILED)
    if (exit_on_failure and any(m.outcome in bad for m in result.members)) or (
        not result.members and result.message and not result.deleted and not result.queued
    ):
        raise typer.Exit(1)


def _print_description(described: NetworkDescription) -> None:
    held = f", held by update run {described.holder!r}" if described.holder else ""
    message = f": {described.status_message}" if described.status_message else ""
    stdout.print(
        f"[bold]network {described.name}[/]: {described.status.value}{message}{held}",
        highlight=False,
    )
    table = Table(title=f"{len(described.members)} member(s)", title_justify="left")
    table.add_column("Member")
    table.add_column("Cluster id")
    table.add_column("Joined")
    table.add_column("By")
    for member in described.members:
        assigned = " (assigned)" if member.cluster_id_assigned else ""
        table.add_row(
            member.name,
            f"{member.cluster_id}{assigned}",
            f"{member.joined_at:%Y-%m-%d %H:%M:%S}",
            member.operation,
        )
    stdout.print(table)
    if described.current:
        op = described.current
        stdout.print(f"running: {op.id} {op.kind.value} {' '.join(op.members)}", markup=False)
    for op in described.pending:
        behind = f" (queued behind update run {op.queued_behind!r})" if op.queued_behind else ""
        stdout.print(
            f"pending: {op.id} {op.kind.value} {' '.join(op.members)}{behind}", markup=False
        )
    for drained in described.left_drained:
        stdout.print(
            f"[bold red]LEFT DRAINED[/]: {drained.member} still has service.cilium.io/shared: "
            f'"false" on {", ".join(drained.services)} (update run {drained.run_id!r}, '
            f"{drained.at:%Y-%m-%d %H:%M:%S}); restore it, then `meshfleet network "
            f"clear-drained {described.name} --member {drained.member} --reason ...`",
            highlight=False,
        )
    for link in described.not_ready_links:
        stdout.print(f"not ready: {link.viewer} -> {link.peer}: {link.reason}", markup=False)
    if described.log:
        stdout.print("recent:")
        for entry in described.log[-10:]:
            who = f" {entry.cluster}" if entry.cluster else ""
            stdout.print(
                f"  {entry.at:%H:%M:%S} {entry.event}{who}: {entry.message}",
                markup=False,
                highlight=False,
            )


def _print_summaries(summaries: list[NetworkSummary]) -> None:
    if not summaries:
        stdout.print("no networks")
        return
    table = Table()
    for column in ("Network", "Status", "Members", "Held by", "Pending"):
        table.add_column(column)
    for s in summaries:
        table.add_row(
            s.name,
            s.status.value if s.status else "(no answer: is a worker running?)",
            "" if s.members is None else str(s.members),
            s.holder or "",
            "" if s.pending is None else str(s.pending),
        )
    stdout.print(table)


def _print_services(report: ServicesReport) -> None:
    if not report.services:
        stdout.print(f"network {report.network}: no global services")
        return
    table = Table(title=f"global services of network {report.network}", title_justify="left")
    for column in ("Service", "Cluster", "Ready/endpoints", "Shared", "Namespace global"):
        table.add_column(column)
    for service in report.services:
        for index, entry in enumerate(service.clusters):
            table.add_row(
                f"{service.namespace}/{service.name}" if index == 0 else "",
                entry.cluster,
                f"{entry.ready_endpoints}/{entry.endpoints}",
                "yes" if entry.effective else ("drained" if not entry.shared else "no"),
                "yes" if entry.namespace_global else "[red]no[/]",
            )
    stdout.print(table)
    for service in report.services:
        for problem in service.problems:
            stdout.print(
                f"[yellow]warning[/] {service.namespace}/{service.name}: {problem}",
                highlight=False,
            )


@network_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network's name (a Fleet resource name)."),
    member: list[str] = typer.Option([], "--member", "-m", help="A cluster to join (repeat)."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Create a network, joining the given clusters through the same path as `join`.

    When every given cluster is rejected, nothing is left behind: the empty
    network is deleted again and the command exits 2 with each rule broken.
    """
    fmt = resolve_output(ctx, output)

    async def create_or_nothing(client: MeshfleetClient) -> OperationResult | None:
        result = await client.create_network(name, member)
        if result is not None and _all_rejected(result):
            await client.delete_network(name)
        return result

    async def body() -> OperationResult | None:
        return await with_client(ctx, create_or_nothing)

    result = run_async(ctx, body, fmt)
    if result is not None and _all_rejected(result):
        _print_result(result, fmt, exit_on_failure=False)
        if fmt is not OutputFormat.JSON:
            stderr.print(
                f"[bold red]error:[/] network {name} was not created: every member was rejected",
                highlight=False,
            )
        raise typer.Exit(InvalidInputError.exit_code)
    if result is not None:
        _print_result(result, fmt)
    elif fmt is OutputFormat.JSON:
        print_json({"network": name, "created": True, "members": []})
    else:
        stdout.print(f"network {name} created (no members yet)", highlight=False)


@network_app.command("join")
def join(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    clusters: list[str] | None = typer.Argument(None, help="Clusters to join."),
    member: list[str] = typer.Option(
        [], "--member", "-m", help="A cluster to join (repeat; as in `create`)."
    ),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Join clusters (positional or --member): each is joined, rejected or queued."""
    fmt = resolve_output(ctx, output)
    joining = [*(clusters or []), *member]
    if not joining:
        problem = "name at least one cluster (positional or --member)"
        report_invalid([FieldError(path="--member", message=problem)], fmt, None)

    async def body() -> OperationResult:
        return await with_client(ctx, lambda c: c.join(name, joining))

    _print_result(run_async(ctx, body, fmt), fmt)


@network_app.command("remove")
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    clusters: list[str] = typer.Argument(..., help="Members to remove."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Remove members: drain their global services, disconnect them, wait until forgotten."""
    fmt = resolve_output(ctx, output)

    async def body() -> OperationResult:
        return await with_client(ctx, lambda c: c.remove(name, clusters))

    _print_result(run_async(ctx, body, fmt), fmt)


@network_app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    force: bool = typer.Option(False, "--force", help="Remove every member first."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Delete an empty network (with --force, remove every member first)."""
    fmt = resolve_output(ctx, output)

    async def body() -> OperationResult:
        return await with_client(ctx, lambda c: c.delete_network(name, force=force))

    _print_result(run_async(ctx, body, fmt), fmt)


@network_app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Members and their ids, status, holder, pending operations, recent log."""
    fmt = resolve_output(ctx, output)

    async def body() -> NetworkDescription:
        return await with_client(ctx, lambda c: c.describe_network(name))

    described = run_async(ctx, body, fmt)
    if fmt is OutputFormat.JSON:
        print_json(described.to_json_dict())
    else:
        _print_description(described)


@network_app.command("list")
def list_(
    ctx: typer.Context,
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Every network, with its status."""
    fmt = resolve_output(ctx, output)

    async def body() -> list[NetworkSummary]:
        return await with_client(ctx, lambda c: c.list_networks())

    summaries = run_async(ctx, body, fmt)
    if fmt is OutputFormat.JSON:
        print_json([s.to_json_dict() for s in summaries])
    else:
        _print_summaries(summaries)


@network_app.command("services")
def services(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Global services: endpoints per cluster; flags global services in non-global namespaces."""
    fmt = resolve_output(ctx, output)

    async def body() -> ServicesReport:
        return await with_client(ctx, lambda c: c.network_services(name))

    report = run_async(ctx, body, fmt)
    if fmt is OutputFormat.JSON:
        print_json(report.to_json_dict())
    else:
        _print_services(report)


@network_app.command("release")
def release(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the network's log)."),
    by: str | None = typer.Option(None, "--by", help="Who releases it (default: user@host)."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Free a network whose holding update run is gone; refused while that run runs."""
    fmt = resolve_output(ctx, output)

    async def body() -> NetworkDescription:
        return await with_client(ctx, lambda c: c.release_network(name, reason, identity=by))

    described = run_async(ctx, body, fmt)
    if fmt is OutputFormat.JSON:
        print_json(described.to_json_dict())
        return
    last = next((e for e in reversed(described.log) if e.event == "releasedByOperator"), None)
    stdout.print(
        f"network {name} released" + (f": {last.message}" if last else ""), highlight=False
    )


@network_app.command("clear-drained")
def clear_drained(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The network."),
    member: str = typer.Option(..., "--member", help="The member listed as left drained."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the network's log)."),
    by: str | None = typer.Option(None, "--by", help="Who clears it (default: user@host)."),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Clear a member from the network's left-drained list (after restoring it by hand)."""
    fmt = resolve_output(ctx, output)

    async def body() -> NetworkDescription:
        return await with_client(ctx, lambda c: c.clear_drained(name, member, reason, identity=by))

    described = run_async(ctx, body, fmt)
    if fmt is OutputFormat.JSON:
        print_json(described.to_json_dict())
        return
    last = next((e for e in reversed(described.log) if e.event == "drainedCleared"), None)
    stdout.print(
        f"network {name}: {member} cleared" + (f": {last.message}" if last else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``meshfleet network`` to the main app."""
    app.add_typer(network_app)
