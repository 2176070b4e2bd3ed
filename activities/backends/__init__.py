"""Fleet backends: implementations of ``engine.domain.backend.FleetBackend``.

Activities reach clusters only through a backend. ``simulated`` is the
embedded default (a persistent, fault-injectable model of a Cilium-meshed
fleet); a Kubernetes backend talks to real clusters. Backends do I/O.
"""
