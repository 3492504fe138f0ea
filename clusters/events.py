"""The only module that knows the clusters' group names and calls group_send.

Messages to group ``cluster.<id>``:

- ``{"type": "cluster.change", "changes": [{"kind": "pods", "op": "upsert"|"delete",
  "key": "ns/name", "obj": {...}}], "stale": bool, "status": {...}}``
- ``{"type": "cluster.metrics", "metrics": "ok"|"none", "nodes": {...}, "totals": {...}}``

The channel layer is best-effort: a lost message is repaired by the snapshot a page
(or a reconnecting socket) reads first.
"""

from __future__ import annotations

from typing import Any

MAX_CHANGES_PER_MESSAGE = 1000


def group_name(cluster_id: int) -> str:
    """Return the group that carries CLUSTER_ID's changes."""
    return f"cluster.{cluster_id}"


async def publish_changes(
    layer: Any,
    cluster_id: int,
    changes: list[dict[str, Any]],
    *,
    stale: bool,
    status: dict[str, Any] | None = None,
) -> None:
    """Send CHANGES in messages of bounded size (one empty one for a status change)."""
    chunks = [
        changes[i : i + MAX_CHANGES_PER_MESSAGE]
        for i in range(0, len(changes), MAX_CHANGES_PER_MESSAGE)
    ] or [[]]
    for chunk in chunks:
        message: dict[str, Any] = {
            "type": "cluster.change",
            "changes": chunk,
            "stale": stale,
        }
        if status is not None:
            message["status"] = status
        await layer.group_send(group_name(cluster_id), message)


async def publish_metrics(layer: Any, cluster_id: int, payload: dict[str, Any]) -> None:
    """Send the latest node usage and cluster totals."""
    await layer.group_send(
        group_name(cluster_id), {"type": "cluster.metrics", **payload}
    )
