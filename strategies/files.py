"""The one place in ``strategies`` that reads a file: a document the caller names.

The loaders (``load_strategy``, ``load_catalog``) read through it; everything
else in this package is pure computation on data already read.
"""

from __future__ import annotations

from pathlib import Path

from engine.domain.documents import parse_document
from engine.domain.errors import FieldError, InvalidInputError

__all__ = ["read_document"]


def read_document(path: Path) -> object:
    """Read and parse one YAML (or JSON) document, with a clear error for unreadable files."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInputError(
            [FieldError(path="", message=f"cannot read file: {error.strerror}")], source=str(path)
        ) from None
    return parse_document(text, source=str(path))
