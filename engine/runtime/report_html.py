"""The rehearsal as a picture: one self-contained HTML file of an update run's timeline.

Pure rendering: no I/O, no clock. :class:`Timeline` is what a reader sees (every
member's steps, the gates and soaks, the global services' ready endpoints) and
:func:`render_html` turns it into a single page with inline CSS and no script or
external asset, so it opens offline. Where the data comes from (a rehearsal's
report, a real run's status and histories) is ``engine.runtime.timeline``'s job.

The page carries its own data as a JSON island (``<script type="application/json"
id="meshfleet-timeline">``): the same timeline, for tools and tests. Every string
from the run (cluster names, messages) is escaped, in the markup and in the island.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: The steps of one member's update in their order, with the colour each is drawn in.
STEP_COLOURS = {
    "Preflight": "#9aa5b1",
    "Drain": "#f0a030",
    "ControlPlane": "#3b7dd8",
    "Cilium": "#8e5bd0",
    "Verify": "#2e9e6a",
    "Restore": "#e0609a",
}
GATE_COLOUR = "#c9a227"
SOAK_COLOUR = "#57b8c9"
FAILED_COLOUR = "#d62d2d"
#: The id of the JSON island that carries the timeline's data.
DATA_ISLAND_ID = "meshfleet-timeline"
#: Zoom factors of the timeline's width (radio buttons and CSS: no script needed).
ZOOMS = (1, 2, 4, 8)
#: Tick spacings the time axis chooses from (seconds).
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200)
_MAX_TICKS = 12


@dataclass(frozen=True)
class StepSpan:
    """One step of one member: from the moment it was asked for to the moment it ended."""

    step: str
    start: dt.datetime
    #: None while it is still running.
    end: dt.datetime | None
    failed: bool = False
    message: str | None = None
    #: Which attempt of the member (a retry starts it again: 2, 3, ...).
    attempt: int = 1


@dataclass(frozen=True)
class MemberRow:
    """One member: where it sits in the plan, how it ended, and its steps."""

    name: str
    stage: str
    group: str
    state: str
    message: str | None
    start: dt.datetime | None
    end: dt.datetime | None
    steps: list[StepSpan] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """The member failed, or a step of its last attempt did (a retry can mend one)."""
        last = max((s.attempt for s in self.steps), default=1)
        return self.state == "Failed" or any(s.failed for s in self.steps if s.attempt == last)


@dataclass(frozen=True)
class Interval:
    """A gate waiting or a soak running: ``kind`` is ``gate`` or ``soak``."""

    kind: str
    label: str
    stage: str
    group: str | None
    start: dt.datetime
    end: dt.datetime | None
    state: str


@dataclass(frozen=True)
class Violation:
    """A time a global service had fewer ready endpoints than its minimum somewhere."""

    start: dt.datetime
    end: dt.datetime | None
    viewpoint: str
    ready: int


@dataclass(frozen=True)
class ServiceSeries:
    """Ready endpoints of one global service over the run: a step function of ``points``."""

    service: str
    minimum: int
    #: (time, ready endpoints from then on), in time order; the first is the baseline.
    points: list[tuple[dt.datetime, int]]
    violations: list[Violation] = field(default_factory=list)
    #: How the points were obtained, said under the chart.
    source: str = ""

    @property
    def lowest(self) -> int:
        """The lowest count the series reaches."""
        return min((v for _, v in self.points), default=0)


@dataclass(frozen=True)
class Timeline:
    """Everything the picture shows about one run."""

    title: str
    network: str
    run: str
    state: str
    target: str
    start: dt.datetime | None
    end: dt.datetime | None
    stages: list[str]
    members: list[MemberRow]
    intervals: list[Interval] = field(default_factory=list)
    services: list[ServiceSeries] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stage_states: dict[str, str] = field(default_factory=dict)
    #: Why a stage failed or was skipped, when it says.
    stage_messages: dict[str, str] = field(default_factory=dict)

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """The time span the picture covers: every member, step, gate and soak."""
        times = [t for t in self._times() if t is not None]
        if not times:
            now = dt.datetime.fromtimestamp(0, dt.UTC)
            return now, now + dt.timedelta(seconds=1)
        first, last = min(times), max(times)
        if last <= first:
            last = first + dt.timedelta(seconds=1)
        return first, last

    def _times(self) -> Iterable[dt.datetime | None]:
        yield self.start
        yield self.end
        for member in self.members:
            yield member.start
            yield member.end
            for step in member.steps:
                yield step.start
                yield step.end
        for interval in self.intervals:
            yield interval.start
            yield interval.end


# --- the data island ----------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def timeline_to_json(timeline: Timeline) -> dict[str, Any]:
    """The timeline as JSON data (what the page's data island holds)."""
    return {
        "title": timeline.title,
        "network": timeline.network,
        "run": timeline.run,
        "state": timeline.state,
        "target": timeline.target,
        "start": _iso(timeline.start),
        "end": _iso(timeline.end),
        "stages": [{"name": s, "state": timeline.stage_states.get(s, "")} for s in timeline.stages],
        "members": [
            {
                "name": m.name,
                "stage": m.stage,
                "group": m.group,
                "state": m.state,
                "message": m.message,
                "start": _iso(m.start),
                "end": _iso(m.end),
                "steps": [
                    {
                        "step": s.step,
                        "start": _iso(s.start),
                        "end": _iso(s.end),
                        "failed": s.failed,
                        "message": s.message,
                        "attempt": s.attempt,
                    }
                    for s in m.steps
                ],
            }
            for m in timeline.members
        ],
        "intervals": [
            {
                "kind": i.kind,
                "label": i.label,
                "stage": i.stage,
                "group": i.group,
                "start": _iso(i.start),
                "end": _iso(i.end),
                "state": i.state,
            }
            for i in timeline.intervals
        ],
        "services": [
            {
                "service": s.service,
                "minimum": s.minimum,
                "lowest": s.lowest,
                "source": s.source,
                "points": [[_iso(t), v] for t, v in s.points],
                "violations": [
                    {
                        "start": _iso(v.start),
                        "end": _iso(v.end),
                        "viewpoint": v.viewpoint,
                        "ready": v.ready,
                    }
                    for v in s.violations
                ],
            }
            for s in timeline.services
        ],
        "notes": timeline.notes,
    }


def _island(data: dict[str, Any]) -> str:
    """JSON that cannot close its <script> element nor open a comment."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- rendering ----------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Scale:
    """Times to percentages of the track, over the timeline's bounds."""

    def __init__(self, first: dt.datetime, last: dt.datetime) -> None:
        self.first = first
        self.span = (last - first).total_seconds()

    def at(self, when: dt.datetime) -> float:
        return min(max((when - self.first).total_seconds() / self.span * 100, 0.0), 100.0)

    def bar(self, start: dt.datetime, end: dt.datetime | None, last: dt.datetime) -> str:
        left = self.at(start)
        width = max(self.at(end or last) - left, 0.0)
        return f"left:{left:.3f}%;width:{width:.3f}%"

    def tick_step(self) -> int:
        return next((s for s in _TICK_STEPS if self.span / s <= _MAX_TICKS), _TICK_STEPS[-1])


def _span_title(label: str, start: dt.datetime, end: dt.datetime | None, first: dt.datetime) -> str:
    began = (start - first).total_seconds()
    if end is None:
        return f"{label}: from +{_duration(began)} ({start:%H:%M:%S}), not finished"
    took = (end - start).total_seconds()
    return f"{label}: +{_duration(began)} ({start:%H:%M:%S}) for {_duration(took)}"


def _member_row(member: MemberRow, scale: _Scale, last: dt.datetime) -> str:
    classes = "row member" + (" failed" if member.failed else "")
    mark = '<span class="x" aria-label="failed">\u2715</span>' if member.failed else ""
    message = f" — {member.message}" if member.message else ""
    label_title = f"{member.name}: {member.state}{message}"
    bars = []
    retried = any(step.attempt > 1 for step in member.steps)
    for step in member.steps:
        name = f"{member.name} {step.step}" + (f" (attempt {step.attempt})" if retried else "")
        title = _span_title(name, step.start, step.end, scale.first)
        if step.message:
            title += f" — {step.message}"
        failed = " failed" if step.failed else ""
        bars.append(
            f'<div class="bar s-{_e(step.step)}{failed}" data-step="{_e(step.step)}" '
            f'data-start="{_e(_iso(step.start))}" data-end="{_e(_iso(step.end) or "")}" '
            f'data-failed="{str(step.failed).lower()}" data-attempt="{step.attempt}" '
            f'style="{scale.bar(step.start, step.end, last)}" title="{_e(title)}"></div>'
        )
    if member.state == "Failed" and not any(s.failed for s in member.steps) and member.end:
        bars.append(
            f'<div class="fail-mark" style="left:{scale.at(member.end):.3f}%" '
            f'title="{_e(label_title)}">\u2715</div>'
        )
    return (
        f'<div class="{classes}" data-member="{_e(member.name)}" data-stage="{_e(member.stage)}" '
        f'data-group="{_e(member.group)}" data-state="{_e(member.state)}">'
        f'<div class="label" title="{_e(label_title)}">{mark}{_e(member.name)}'
        f'<span class="st st-{_e(member.state)}">{_e(member.state)}</span></div>'
        f'<div class="track">{"".join(bars)}</div></div>'
    )


def _interval_bars(intervals: list[Interval], scale: _Scale, last: dt.datetime) -> str:
    bars = []
    for interval in intervals:
        title = _span_title(interval.label, interval.start, interval.end, scale.first)
        title += f" ({interval.state})"
        failed = " failed" if interval.state == "Failed" else ""
        bars.append(
            f'<div class="bar {_e(interval.kind)}{failed}" data-kind="{_e(interval.kind)}" '
            f'data-label="{_e(interval.label)}" data-start="{_e(_iso(interval.start))}" '
            f'data-end="{_e(_iso(interval.end) or "")}" '
            f'style="{scale.bar(interval.start, interval.end, last)}" title="{_e(title)}"></div>'
        )
    return "".join(bars)


def _axis(scale: _Scale) -> str:
    step = scale.tick_step()
    ticks = []
    n = 0
    # The last tick stays clear of the right edge (its label would be cut off).
    while n * step <= scale.span * 0.97:
        left = n * step / scale.span * 100
        when = scale.first + dt.timedelta(seconds=n * step)
        ticks.append(
            f'<span class="tick" style="left:{left:.3f}%">+{_duration(n * step)}'
            f"<small>{when:%H:%M:%S}</small></span>"
        )
        n += 1
    return (
        '<div class="row axis"><div class="label">member \u2193 / time \u2192</div>'
        f'<div class="track">{"".join(ticks)}</div></div>'
    )


def _service_chart(series: ServiceSeries, scale: _Scale, last: dt.datetime) -> str:
    width, height, pad = 420.0, 96.0, 16.0
    top = max([v for _, v in series.points] + [series.minimum, 1]) + 1

    def x(when: dt.datetime) -> float:
        return scale.at(when) / 100 * width

    def y(value: float) -> float:
        return height - pad - value / top * (height - 2 * pad)

    path: list[str] = []
    for i, (when, value) in enumerate(series.points):
        px, py = x(when), y(value)
        if i == 0:
            path.append(f"M{px:.1f},{py:.1f}")
        else:
            path.append(f"H{px:.1f}V{py:.1f}")
    if series.points:
        path.append(f"H{width:.1f}")
    bands = "".join(
        f'<rect class="violation" x="{x(v.start):.1f}" y="0" '
        f'width="{max(x(v.end or last) - x(v.start), 1.5):.1f}" height="{height:.0f}">'
        f"<title>{_e(f'below minimum seen from {v.viewpoint}: {v.ready} ready')}</title></rect>"
        for v in series.violations
    )
    low = series.lowest
    below = low < series.minimum or bool(series.violations)
    caption_class = "caption bad" if below else "caption"
    return (
        f'<figure class="service" data-service="{_e(series.service)}" '
        f'data-minimum="{series.minimum}" data-lowest="{low}" '
        f'data-violations="{len(series.violations)}">'
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'role="img" aria-label="{_e(series.service)} ready endpoints">'
        f"{bands}"
        f'<line class="minimum" x1="0" x2="{width:.0f}" y1="{y(series.minimum):.1f}" '
        f'y2="{y(series.minimum):.1f}"/>'
        f'<text class="minlabel" x="{width - 4:.0f}" y="{y(series.minimum) - 3:.1f}">'
        f"min {series.minimum}</text>"
        f'<path class="ready" d="{" ".join(path)}"/>'
        f'<text class="axislabel" x="2" y="{y(top - 1) - 3:.1f}">{top - 1}</text>'
        f'<text class="axislabel" x="2" y="{height - 3:.0f}">0</text>'
        f'<text class="axislabel end" x="{width - 2:.0f}" y="{height - 3:.0f}">'
        f"+{_duration(scale.span)}</text>"
        "</svg>"
        f'<figcaption class="{caption_class}"><b>{_e(series.service)}</b> '
        f"ready endpoints: lowest {low}, minimum {series.minimum}"
        + (f", {len(series.violations)} violation(s)" if series.violations else "")
        + (f"<br><small>{_e(series.source)}</small>" if series.source else "")
        + "</figcaption></figure>"
    )


_CSS = """
:root{--label:230px;--row:14px;font-family:system-ui,-apple-system,"Segoe UI",sans-serif}
body{margin:0;color:#1d2733;background:#fff;font-size:13px}
header{padding:12px 16px 4px}
h1{font-size:18px;margin:0 0 4px}
.meta span{margin-right:14px;white-space:nowrap}
.badge{padding:1px 7px;border-radius:9px;color:#fff;background:#6b7785}
.badge.Completed{background:#2e9e6a}.badge.Failed{background:#d62d2d}
.badge.Stopped{background:#a050a0}.badge.Running{background:#3b7dd8}
.notes{color:#5b6672;margin:4px 0 0;padding-left:18px}
.legend{padding:4px 16px;display:flex;flex-wrap:wrap;gap:12px;align-items:center}
.legend i{display:inline-block;width:14px;height:9px;margin-right:4px;vertical-align:middle;
border-radius:2px}
.services{display:flex;flex-wrap:wrap;gap:8px 18px;padding:6px 16px}
.service{margin:0}.service svg{background:#f7f9fb;border:1px solid #e1e6eb;display:block}
.service .ready{fill:none;stroke:#2466c2;stroke-width:2}
.service .minimum{stroke:#d62d2d;stroke-dasharray:5 3;stroke-width:1.2}
.service .violation{fill:#d62d2d;opacity:.25}
.service text{font-size:10px;fill:#5b6672}.service .minlabel{text-anchor:end;fill:#d62d2d}
.service .end{text-anchor:end}
.caption{font-size:12px;margin-top:2px}.caption.bad b{color:#d62d2d}
.gantt{margin:6px 0 24px;overflow:auto;max-height:none;border-top:1px solid #e1e6eb}
.row{display:flex;min-width:calc(var(--label) + 900px);height:var(--row);
line-height:var(--row)}
.label{position:sticky;left:0;z-index:2;flex:0 0 var(--label);background:#fff;
padding:0 6px 0 8px;box-sizing:border-box;overflow:hidden;white-space:nowrap;
text-overflow:ellipsis;border-right:1px solid #e1e6eb;font-size:11px}
.track{position:relative;flex:1 1 auto;background-image:linear-gradient(to right,#edf0f3 1px,
transparent 1px);background-size:var(--tick) 100%}
.member:hover .label,.member:hover .track{background-color:#f1f5fa}
.member .label{padding-left:26px}
.stage{height:20px;line-height:20px;margin-top:6px;background:#eef2f6}
.stage .label{background:#eef2f6;font-weight:600;font-size:12px}
.group{height:16px;line-height:16px}.group .label{padding-left:16px;color:#44505c;
font-style:italic}
.axis{position:sticky;top:0;z-index:3;height:30px;line-height:14px;background:#fff;
border-bottom:1px solid #c9d1d9}
.axis .label{color:#5b6672;line-height:30px}
.tick{position:absolute;top:2px;font-size:10px;color:#44505c;padding-left:3px;
border-left:1px solid #c9d1d9;white-space:nowrap}
.tick small{display:block;color:#8a949e}
.bar{position:absolute;top:3px;bottom:3px;min-width:2px;border-radius:2px}
.stage .bar,.group .bar{top:4px;bottom:4px}
.bar.gate{background:repeating-linear-gradient(45deg,#c9a227 0 4px,#e7d08a 4px 8px)}
.bar.soak{background:#57b8c9}
.bar.stagespan{background:#d5dde5;top:8px;bottom:8px}
.bar.failed{outline:2px solid #d62d2d;outline-offset:0;
background-image:repeating-linear-gradient(135deg,transparent 0 3px,rgba(214,45,45,.7) 3px 5px)}
.fail-mark,.x{color:#d62d2d;font-weight:700}
.fail-mark{position:absolute;top:0;font-size:11px;transform:translateX(-50%)}
.x{margin-right:4px}
.member.failed .label,.stage.failed .label{color:#b01f1f;font-weight:600}
.st{float:right;font-size:10px;color:#8a949e;margin-left:6px}
.st-Failed{color:#d62d2d}.st-Skipped{color:#a0a8b0}
.zoomer{position:absolute;opacity:0;pointer-events:none}
.zoom label{cursor:pointer;padding:0 5px;border:1px solid #c9d1d9;border-radius:3px;
margin-left:3px;user-select:none}
"""


def _zoom_css() -> str:
    """Each zoom radio, when checked, widens the timeline and highlights its button."""
    return "".join(
        f"#zoom-{z}:checked~.gantt .row{{min-width:calc(var(--label) + {900 * z}px)}}"
        f"#zoom-{z}:checked~.legend label[for=zoom-{z}]{{background:#1d2733;color:#fff}}"
        for z in ZOOMS
    )


def render_html(timeline: Timeline) -> str:
    """The whole page: header, legend, one chart per global service, the Gantt timeline."""
    first, last = timeline.bounds()
    scale = _Scale(first, last)
    tick = scale.tick_step() / scale.span * 100
    state = timeline.state
    members = timeline.members
    done = sum(1 for m in members if m.state in ("Completed", "Skipped"))
    failed = sum(1 for m in members if m.failed)
    took = _duration((last - first).total_seconds())
    meta = [
        f'<span class="badge {_e(state)}">{_e(state)}</span>',
        f"<span>target <b>{_e(timeline.target)}</b></span>",
        f"<span>{done}/{len(members)} members done</span>",
        f"<span>{failed} failed</span>" if failed else "",
        f"<span>{first:%Y-%m-%d %H:%M:%S} UTC, {took}</span>",
    ]
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{_e(step)}</span>'
        for step, colour in STEP_COLOURS.items()
    )
    legend += (
        f'<span><i style="background:{GATE_COLOUR}"></i>gate waiting</span>'
        f'<span><i style="background:{SOAK_COLOUR}"></i>soak</span>'
        f'<span><i style="outline:2px solid {FAILED_COLOUR}"></i>failed \u2715</span>'
        '<span><i style="background:#2466c2;height:3px"></i>ready endpoints</span>'
        f'<span><i style="border-top:2px dashed {FAILED_COLOUR};height:0"></i>minimum</span>'
    )
    legend += (
        '<span class="zoom">zoom'
        + "".join(f'<label for="zoom-{z}">{z}\u00d7</label>' for z in ZOOMS)
        + "</span>"
    )
    zoomers = "".join(
        f'<input type="radio" class="zoomer" name="zoom" id="zoom-{z}"'
        + (" checked" if z == 1 else "")
        + ">"
        for z in ZOOMS
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in timeline.notes)
    charts = "".join(_service_chart(s, scale, last) for s in timeline.services)
    rows = [_axis(scale)]
    for stage in timeline.stages:
        stage_members = [m for m in members if m.stage == stage]
        stage_intervals = [i for i in timeline.intervals if i.stage == stage and i.group is None]
        stage_state = timeline.stage_states.get(stage, "")
        starts = [m.start for m in stage_members if m.start] + [i.start for i in stage_intervals]
        ends = [t for m in stage_members for t in (m.end, m.start) if t]
        ends += [i.end or i.start for i in stage_intervals]
        span = ""
        if starts and ends:
            span = (
                f'<div class="bar stagespan" style="{scale.bar(min(starts), max(ends), last)}">'
                "</div>"
            )
        failed_class = " failed" if stage_state == "Failed" else ""
        stage_title = f"stage {stage}: {stage_state}"
        if timeline.stage_messages.get(stage):
            stage_title += f" — {timeline.stage_messages[stage]}"
        rows.append(
            f'<div class="row stage{failed_class}" data-stage="{_e(stage)}" '
            f'data-state="{_e(stage_state)}"><div class="label" title="{_e(stage_title)}">'
            f"stage {_e(stage)}"
            f'<span class="st st-{_e(stage_state)}">{_e(stage_state)}</span></div>'
            f'<div class="track">{span}{_interval_bars(stage_intervals, scale, last)}</div></div>'
        )
        groups: list[str] = []
        for m in stage_members:
            if m.group not in groups:
                groups.append(m.group)
        groups += [
            i.group
            for i in timeline.intervals
            if i.stage == stage and i.group is not None and i.group not in groups
        ]
        for group in groups:
            group_intervals = [
                i for i in timeline.intervals if i.stage == stage and i.group == group
            ]
            rows.append(
                f'<div class="row group" data-stage="{_e(stage)}" data-group="{_e(group)}">'
                f'<div class="label">group {_e(group)}</div>'
                f'<div class="track">{_interval_bars(group_intervals, scale, last)}</div></div>'
            )
            rows.extend(_member_row(m, scale, last) for m in stage_members if m.group == group)
    step_css = "".join(f".s-{step}{{background:{c}}}" for step, c in STEP_COLOURS.items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(timeline.title)}</title>"
        f"<style>{_CSS}{_zoom_css()}{step_css}.track{{--tick:{tick:.4f}%}}</style></head><body>"
        f"<header><h1>{_e(timeline.title)}</h1>"
        f'<div class="meta">{"".join(meta)}</div>'
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + "</header>"
        + zoomers
        + f'<div class="legend">{legend}</div>'
        + (f'<section class="services">{charts}</section>' if charts else "")
        + f'<section class="gantt">{"".join(rows)}</section>'
        f'<script type="application/json" id="{DATA_ISLAND_ID}">'
        f"{_island(timeline_to_json(timeline))}</script>"
        "</body></html>\n"
    )
