"""Starter fleet files (``meshfleet sim init --example NAME``)."""

from __future__ import annotations

from importlib import resources

from engine.domain.errors import FieldError, InvalidInputError


def example_names() -> list[str]:
    """The names of the bundled examples."""
    folder = resources.files(__name__)
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def example_text(name: str) -> str:
    """The text of one example; InvalidInputError naming the choices when unknown."""
    names = example_names()
    if name not in names:
        choices = ", ".join(names)
        raise InvalidInputError(
            [
                FieldError(
                    path="--example",
                    message=f"unknown example {name!r} (choose one of: {choices})",
                )
            ]
        )
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
