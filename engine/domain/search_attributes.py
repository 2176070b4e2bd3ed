"""meshfleet's search attributes: what the Web UI and the client list and filter runs by.

Declared once here (names and types only); the embedded server and
``meshfleet setup`` register exactly these, workflows keep them current, and
the client queries them.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

#: The network a network workflow or update run belongs to.
NETWORK = SearchAttributeKey.for_keyword("MeshfleetNetwork")
#: An update run's state (NotStarted, Running, ..., Completed).
RUN_STATE = SearchAttributeKey.for_keyword("MeshfleetRunState")
#: The stage an update run is working on.
STAGE = SearchAttributeKey.for_keyword("MeshfleetStage")
#: An update run's target Kubernetes version.
TARGET_VERSION = SearchAttributeKey.for_keyword("MeshfleetTargetVersion")

#: The clusters a workflow works on (a keyword list): a run's network members when it
#: started, a member workflow's own cluster. ``MeshfleetMember = "eu-west-2"`` finds
#: every run and member update that touched that cluster.
MEMBER = SearchAttributeKey.for_keyword_list("MeshfleetMember")

ALL = (NETWORK, RUN_STATE, STAGE, TARGET_VERSION, MEMBER)


def type_name(key: SearchAttributeKey[Any]) -> str:
    """The type as the Temporal CLI names it: ``Keyword``, ``KeywordList``."""
    return "".join(part.capitalize() for part in key.indexed_value_type.name.split("_"))
