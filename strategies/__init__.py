"""Pure planning: strategy formats, validation, the plan DAG, selectors,
concurrency and failure math, maintenance windows, version rules.

Everything here is data manipulation and computation: no Temporal, no
Kubernetes, no network, no clock (the planner and the window functions take
``now`` as a parameter). The only file reads are the explicit ``load_*``
helpers, which read a file the caller names through ``strategies.files``, and
the bundled release catalog shipped inside this package. Workflows call the
pure functions; the CLI and the client call the loaders.
"""

from strategies.catalog import ReleaseCatalog, bundled_catalog, load_catalog, parse_catalog
from strategies.channels import (
    ChannelError,
    ChannelResolution,
    channel_minor,
    resolve_channel,
    with_start_gate,
)
from strategies.concurrency import (
    Quantity,
    failure_budget,
    group_concurrency,
    parse_concurrency,
    parse_failures,
    stage_concurrency,
)
from strategies.fleet_windows import (
    fleet_window_end,
    fleet_window_next_opening,
    fleet_window_open,
)
from strategies.formats import (
    FleetExport,
    StrategyFormat,
    default_strategy,
    detect_format,
    load_strategy,
    parse_strategy,
    strategy_from_fleet,
    strategy_to_fleet,
)
from strategies.planner import plan, plan_hash
from strategies.selectors import LabelSelector, SelectorError, parse_selector
from strategies.topology import CycleError, find_cycles, resolve_dependencies, topological_order
from strategies.upgrades import (
    SkewProblem,
    VersionPath,
    VersionPathError,
    skew_problems,
    version_path,
)
from strategies.validation import Placement, place_members, validate_strategy
from strategies.windows import (
    WindowPriority,
    current_opening_end,
    is_open,
    next_opening,
    next_scheduled_start,
    window_priority,
)

__all__ = [
    "ChannelError",
    "ChannelResolution",
    "CycleError",
    "FleetExport",
    "LabelSelector",
    "Placement",
    "Quantity",
    "ReleaseCatalog",
    "SelectorError",
    "SkewProblem",
    "StrategyFormat",
    "VersionPath",
    "VersionPathError",
    "WindowPriority",
    "bundled_catalog",
    "channel_minor",
    "current_opening_end",
    "default_strategy",
    "detect_format",
    "failure_budget",
    "find_cycles",
    "fleet_window_end",
    "fleet_window_next_opening",
    "fleet_window_open",
    "group_concurrency",
    "is_open",
    "load_catalog",
    "load_strategy",
    "next_opening",
    "next_scheduled_start",
    "parse_catalog",
    "parse_concurrency",
    "parse_failures",
    "parse_selector",
    "parse_strategy",
    "place_members",
    "plan",
    "plan_hash",
    "resolve_channel",
    "resolve_dependencies",
    "skew_problems",
    "stage_concurrency",
    "strategy_from_fleet",
    "strategy_to_fleet",
    "topological_order",
    "validate_strategy",
    "version_path",
    "window_priority",
    "with_start_gate",
]
