"""The runtime: meshfleet's composition root.

Client API, CLI, worker, the embedded Temporal dev server, settings and
telemetry. This is the only layer that wires workflows, activities and
backends together, and the only one that reads the environment.
"""
