"""One trace per update run: run -> member -> step -> backend call, labelled with both."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from engine.domain.run import State
from engine.runtime import devserver
from engine.runtime.telemetry import MeshfleetTracingInterceptor, workflow_attributes
from tests.runs.harness import Cluster, running_fleet, strategy

MEMBERS = ["trace-1", "trace-2"]
#: A member serving no global service: the drain annotates nothing (the wait that
#: follows finds no peer routing to it) and there is nothing to restore.
STEPS = [
    "preflight_member",
    "drain_member_annotate",
    "drain_member_wait",
    "upgrade_control_plane",
    "upgrade_cilium",
    "verify_member",
]


class Tree:
    """The spans of one trace, walkable from the root down."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans if s.context is not None}

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self.by_id.get(span.parent.span_id) if span.parent is not None else None

    def ancestors(self, span: ReadableSpan) -> list[ReadableSpan]:
        found = []
        current = self.parent(span)
        while current is not None:
            found.append(current)
            current = self.parent(current)
        return found

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]


def attribute(span: ReadableSpan, key: str) -> object:
    return (span.attributes or {}).get(key)


async def test_a_two_member_run_is_one_trace_of_run_member_step_and_backend_spans(
    temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await Client.connect(
        temporal_server.address,
        data_converter=pydantic_data_converter,
        interceptors=[MeshfleetTracingInterceptor(provider.get_tracer("test"))],
    )
    clusters = [Cluster(name, group="all") for name in MEMBERS]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(strategy([{"name": "all", "groups": [{"name": "all"}]}]))
        final = await run.result()
    assert final.state is State.COMPLETED

    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "StartWorkflow:UpdateRun"]
    assert root.parent is None
    assert root.context is not None
    tree = Tree([s for s in spans if s.context and s.context.trace_id == root.context.trace_id])
    for span in tree.spans:
        assert span is root or tree.ancestors(span)[-1] is root, f"{span.name} is not under the run"
        # Every span of the run's own workflows (run, members, their activities) names it.
        if str(attribute(span, "temporalWorkflowID") or "").startswith(run.workflow_id):
            assert attribute(span, "meshfleet.network") == fleet.network, span.name
            assert attribute(span, "meshfleet.run") == run.name, span.name

    # run -> member (the child workflow's start) -> step (its activity) -> backend call
    members = tree.named("StartChildWorkflow:MemberUpdate")
    assert sorted(str(attribute(s, "meshfleet.member")) for s in members) == MEMBERS
    for member in members:
        assert tree.parent(member) is root
        name = attribute(member, "meshfleet.member")
        (member_run,) = [
            s for s in tree.named("RunWorkflow:MemberUpdate") if tree.parent(s) is member
        ]
        assert attribute(member_run, "meshfleet.member") == name
        steps = [
            s
            for s in tree.spans
            if s.name.startswith("RunActivity:") and member in tree.ancestors(s)
        ]
        assert [s.name.removeprefix("RunActivity:") for s in steps] == STEPS
        for step in steps:
            starter = tree.parent(step)
            assert starter is not None
            assert starter.name == step.name.replace("RunActivity:", "StartActivity:")
            assert tree.parent(starter) is member
            assert attribute(step, "meshfleet.member") == name
            calls = [s for s in tree.spans if tree.parent(s) is step]
            assert all(call.name.startswith("backend.") for call in calls), step.name
            assert all(attribute(call, "meshfleet.member") == name for call in calls)
        # Every step that talks to the fleet shows its calls (the wait after a drain that
        # annotated nothing has nobody to ask).
        called = {
            tree.parent(s).name.removeprefix("RunActivity:"): s.name  # type: ignore[union-attr]
            for s in tree.spans
            if s.name.startswith("backend.") and member in tree.ancestors(s)
        }
        assert set(called) >= set(STEPS) - {"drain_member_wait"}
        assert "backend.start_control_plane_upgrade" in {
            s.name for s in tree.spans if member in tree.ancestors(s)
        }
    # Nothing of one member hangs under the other.
    for span in tree.spans:
        owners = {attribute(a, "meshfleet.member") for a in [span, *tree.ancestors(span)]}
        assert len(owners - {None}) <= 1, span.name


def test_workflow_ids_name_the_network_run_and_member() -> None:
    assert workflow_attributes("updaterun/prod/ring-1/member/eu-west-2") == {
        "meshfleet.network": "prod",
        "meshfleet.run": "ring-1",
        "meshfleet.member": "eu-west-2",
    }
    assert workflow_attributes("updaterun/prod/ring-1") == {
        "meshfleet.network": "prod",
        "meshfleet.run": "ring-1",
    }
    assert workflow_attributes("network/prod") == {"meshfleet.network": "prod"}
    assert workflow_attributes("health-check-1") == {}
