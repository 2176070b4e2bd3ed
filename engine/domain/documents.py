"""YAML (and JSON) documents as meshfleet reads them: text in, plain data out.

Every file a user writes (fleet, strategy, catalog, profile) is parsed here,
with YAML 1.2 booleans so that a key such as ``on:`` stays a key. Reading the
file is the caller's job (``strategies.files``): this module does no I/O.
"""

from __future__ import annotations

import re

import yaml

from engine.domain.errors import FieldError, InvalidInputError

__all__ = ["parse_document", "parse_yaml"]


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``on:`` stays a key."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def parse_yaml(text: str) -> object:
    """Parse YAML (or JSON) text with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_Yaml12Loader)


def parse_document(text: str, source: str | None = None) -> object:
    """Parse one document, with a clear InvalidInputError naming ``source`` when it is not
    valid YAML or JSON."""
    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        raise InvalidInputError(
            [FieldError(path="", message=f"not valid YAML or JSON: {error}")], source=source
        ) from None
