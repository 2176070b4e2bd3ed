"""Read a timeline page back the way a browser would see its structure (stdlib html.parser)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from engine.runtime.report_html import DATA_ISLAND_ID


@dataclass
class Bar:
    step: str
    start: dt.datetime
    end: dt.datetime | None
    failed: bool
    classes: set[str]
    title: str
    attempt: int


@dataclass
class Row:
    member: str
    stage: str
    group: str
    state: str
    classes: set[str]
    label_title: str = ""
    bars: list[Bar] = field(default_factory=list)


@dataclass
class Page:
    """What the page shows: member rows and their bars, intervals, service charts, the island."""

    rows: dict[str, Row] = field(default_factory=dict)
    intervals: list[dict[str, str]] = field(default_factory=list)
    charts: dict[str, dict[str, str]] = field(default_factory=dict)
    scripts: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    island: dict[str, Any] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._row: Row | None = None
        self._in_island = False
        self._island = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.append(tag)
        classes = set(a.get("class", "").split())
        for key in ("src", "href"):
            if key in a:
                self.page.external.append(a[key])
        if tag == "script":
            self.page.scripts.append(a)
            self._in_island = a.get("id") == DATA_ISLAND_ID
        elif "member" in classes and "row" in classes:
            self._row = Row(
                a["data-member"], a["data-stage"], a["data-group"], a["data-state"], classes
            )
            self.page.rows[self._row.member] = self._row
        elif "row" in classes:
            self._row = None
        elif self._row is not None and "label" in classes:
            self._row.label_title = a.get("title", "")
        elif self._row is not None and "data-step" in a:
            start = _when(a["data-start"])
            assert start is not None
            self._row.bars.append(
                Bar(
                    a["data-step"],
                    start,
                    _when(a["data-end"]),
                    a["data-failed"] == "true",
                    classes,
                    a.get("title", ""),
                    int(a["data-attempt"]),
                )
            )
        elif "data-kind" in a:
            self.page.intervals.append(a)
        elif tag == "figure" and "service" in classes:
            self.page.charts[a["data-service"]] = a

    def handle_data(self, data: str) -> None:
        if self._in_island:
            self._island += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_island = False


def read_page(text: str) -> Page:
    """Parse a page written by ``render_html``."""
    reader = _Reader()
    reader.feed(text)
    reader.close()
    page = reader.page
    page.island = json.loads(reader._island) if reader._island else {}
    return page
