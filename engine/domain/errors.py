"""The user-facing error taxonomy: every error a person sees is one of these.

The CLI turns them into one clear line (or a list of field errors) and an exit
code; nothing here ever reaches a user as a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from engine.domain.model import DomainModel


class FieldError(DomainModel):
    """One broken rule: where (a dotted path like ``spec.stages[0].name``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class MeshfleetError(Exception):
    """Base of errors meant for a person. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InvalidInputError(MeshfleetError):
    """Input broke one or more rules; all of them are listed at once."""

    exit_code = 2

    def __init__(self, errors: Sequence[FieldError], *, source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(e) for e in self.errors))


class NotFoundError(MeshfleetError):
    """A named thing (network, run, cluster, gate) does not exist."""


class UnavailableError(MeshfleetError):
    """Something meshfleet depends on (Temporal, a backend, a binary) cannot be reached."""


def location_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """('spec', 'stages', 0, 'name') -> 'spec.stages[0].name'."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def field_errors_from_pydantic(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten a pydantic ValidationError into FieldErrors with readable paths."""
    found: list[FieldError] = []
    for item in error.errors(include_url=False):
        # Tagged unions and validators add loc parts that are not field names.
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        found.append(FieldError(path=location_path(loc, prefix), message=message))
    return found
