"""Every patch of the network workflow, named once.

Each id marks where today's code differs from the code that recorded older
histories: ``workflow.patched(id)`` takes the new path in new runs and keeps
the old path on replay. The ids are history: never rename or reuse one.
"""

from __future__ import annotations

#: Patch: enable_mesh is given the cluster id the network allocated (backends write it).
PATCH_ENABLE_MESH_CLUSTER_ID = "enable-mesh-cluster-id"
#: Patch: the Degraded re-check timer (036ed40 added it without a patch; histories of
#: networks started before it have no timer where today's code would arm one).
PATCH_DEGRADED_RECHECK = "network-degraded-recheck"
#: Patch: the network continues as new at its own bound, not only when the server says.
PATCH_HISTORY_BOUND = "network-history-bound"
#: Patch: a hold whose acquire names the holder's execution is watched (the lease).
PATCH_HOLDER_LEASE = "network-holder-lease"
