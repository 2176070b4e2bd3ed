"""The domain: pydantic models and typed identifiers shared by every layer.

All the modules here are purely data: no I/O, no clock, no Temporal, no
Kubernetes. They import nothing of meshfleet's (the layering contract in
``pyproject.toml`` checks it), so workflows, activities, strategies and the
runtime can all depend on them.
"""
