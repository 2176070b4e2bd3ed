"""meshfleet's engine: the domain models at the bottom, the runtime on top.

``engine.domain`` holds the pydantic models every layer shares and imports
nothing of ours. ``engine.runtime`` is the composition root: client, CLI,
worker, embedded Temporal server, settings and telemetry. This package's own
``__init__`` imports neither, so importing the domain never drags the runtime in.
"""
