"""Temporal workflows: deterministic orchestration only.

Workflow code takes every decision from pure functions in ``strategies`` or
from activity results; time, randomness and I/O come only through workflow
APIs. Activities are called by the names declared in ``engine.domain``, so
this package never imports ``activities`` (or a Kubernetes client).

The two long workflows are each one class assembled from parts, one job per
module: ``update_run`` over ``run_*``, ``network`` over ``network_*``. Timeouts
and retry policies are named once in ``policies``.
"""
