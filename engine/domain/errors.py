"""The user-facing error taxonomy: every error a person sees is one of these.

The CLI turns them into one clear line (or a list of field errors) and an exit
code; nothing here ever reaches a user as a traceback.
"""

from __future__ import annotations

import difflib
import enum
import typing
from collections.abc import Iterable, Sequence
from typing import ClassVar

from pydantic import BaseModel, ValidationError

from engine.domain.model import DomainModel


class FieldError(DomainModel):
    """One broken rule: where (a dotted path like ``spec.stages[0].name``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class Retry(enum.StrEnum):
    """Whether retrying an activity can fix its error, named as its ApplicationError type.

    Each error class declares its own (``retry``); the activities turn an error
    into a Temporal ``ApplicationError`` of that type, non-retryable unless
    :attr:`RETRYABLE`. The names are recorded in workflow histories: never rename one.
    """

    #: A transient problem (something unreachable): Temporal tries the activity again.
    RETRYABLE = "MeshfleetRetryable"
    #: The request can never succeed as asked: retrying cannot help.
    NON_RETRYABLE = "MeshfleetNonRetryable"
    #: A wait ran past its deadline: not retried, the workflow decides what follows.
    TIMED_OUT = "MeshfleetTimedOut"

    @property
    def retryable(self) -> bool:
        """Whether Temporal may try the failed activity again."""
        return self is Retry.RETRYABLE


class MeshfleetError(Exception):
    """Base of errors meant for a person. ``exit_code`` is what the CLI returns.

    ``retry`` says whether an activity that fails with it is tried again: by
    default no (a retry cannot fix a broken rule or a missing thing).
    """

    exit_code = 1
    retry: ClassVar[Retry] = Retry.NON_RETRYABLE


class InvalidInputError(MeshfleetError):
    """Input broke one or more rules; all of them are listed at once."""

    exit_code = 2
    retry = Retry.NON_RETRYABLE

    def __init__(self, errors: Sequence[FieldError], *, source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(e) for e in self.errors))


class NotFoundError(MeshfleetError):
    """A named thing (network, run, cluster, gate) does not exist."""

    retry = Retry.NON_RETRYABLE


class UnavailableError(MeshfleetError):
    """Something meshfleet depends on (Temporal, a backend, a binary) cannot be reached."""

    retry = Retry.RETRYABLE  # it may be reachable again on the next try


def location_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """('spec', 'stages', 0, 'name') -> 'spec.stages[0].name'."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model that holds the last part of ``loc`` (None when the path leaves models)."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = next(
            (f for name, f in current.model_fields.items() if part in (name, f.alias)), None
        )
        if field is None:
            return None
        nested = _nested_model(field.annotation)
        if nested is None:
            return None
        current = nested
    return current


def _nested_model(annotation: object) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in reversed(typing.get_args(annotation)):
        found = _nested_model(argument)
        if found is not None:
            return found
    return None


def _did_you_mean(model: type[BaseModel] | None, loc: Sequence[int | str]) -> str:
    holder = _model_at(model, loc) if model is not None and loc else None
    if holder is None or not isinstance(loc[-1], str):
        return ""
    known = [f.alias or name for name, f in holder.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def field_errors_from_pydantic(
    error: ValidationError, prefix: str = "", *, model: type[BaseModel] | None = None
) -> list[FieldError]:
    """Flatten a pydantic ValidationError into FieldErrors with readable paths.

    With ``model`` (the one validated), an unknown field suggests the closest
    known one. A number where a string belongs (YAML reads ``1.32`` as a
    number) says to quote it.
    """
    found: list[FieldError] = []
    for item in error.errors(include_url=False):
        # Tagged unions and validators add loc parts that are not field names.
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message += _did_you_mean(model, loc)
        elif item["type"] == "string_type" and isinstance(item.get("input"), int | float):
            message += (
                f'; YAML read it as the number {item["input"]!r}: quote it: "{item["input"]}"'
            )
        found.append(FieldError(path=location_path(loc, prefix), message=message))
    return found
