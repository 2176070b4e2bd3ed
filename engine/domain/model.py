"""The base model: camelCase in files and JSON, snake_case in Python."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class DomainModel(BaseModel):
    """Base of every meshfleet model.

    Files and JSON use camelCase (as Fleet and Kubernetes do); Python code uses
    snake_case. Unknown fields are errors, so a typo in a strategy or fleet
    file is reported instead of silently ignored.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    def to_json_dict(self) -> dict[str, object]:
        """The camelCase JSON form, as written to files and printed by the CLI."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
