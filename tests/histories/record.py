"""Write a workflow's history as a golden history (used when recording, not by tests)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

HISTORIES = Path(__file__).parent


async def record(
    client: Client,
    workflow_id: str,
    workflow_type: str,
    state: str,
    note: str,
    *,
    run_id: str | None = None,
) -> Path:
    """Save ``workflow_id``'s whole history as ``<workflow_type>/<state>.json`` plus a note.

    The latest run's history, or (``run_id``) that run's, e.g. one that continued as new.
    """
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    folder = HISTORIES / workflow_type
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{state}.json"
    target.write_text(history.to_json())
    target.with_suffix(".md").write_text(note.strip() + "\n")
    return target
