"""The Web UI bundled with the server (Temporal UI 2.54): run details, finding work by cluster."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import urllib.request
from pathlib import Path

from engine.runtime import devserver
from strategies.details import details_markdown
from tests.strategies.test_details import STATUS


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
    return body.decode()


async def test_the_web_ui_renders_the_run_details_as_a_table_whose_cells_stay_apart(
    tmp_path: Path,
) -> None:
    """Through the real UI's markdown renderer: a <table>, each cell with its gutter."""
    server = await devserver.start_embedded_server(tmp_path, grpc_port=None, ui_port=None)
    try:
        assert server.ui_url is not None
        content = urllib.parse.quote(details_markdown(STATUS))
        url = f"{server.ui_url.rstrip('/')}/render?content={content}&theme=light"
        html = await asyncio.to_thread(fetch, url)
    finally:
        server.stop()
    assert "<table>" in html
    rows = [
        [
            re.sub(r"<[^>]+>", "", cell)
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
    ]
    nbsp = re.compile(r"&#xa0;|&nbsp;|\u00a0", re.IGNORECASE)
    texts = [[nbsp.sub("\u00a0", cell) for cell in row] for row in rows]
    assert [cell.strip("\u00a0") for cell in texts[1]] == [
        "canary",
        "Completed",
        "2/2",
        "0",
        "0",
        "0",
    ]
    # The gutters survive the renderer: adjacent cells can never read "Completed2/2".
    assert all(
        cell.startswith("\u00a0") and cell.endswith("\u00a0") for row in texts for cell in row
    )
