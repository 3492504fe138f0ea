"""One multiplexed socket per browser tab: ``/ws/clusters/<id>/``.

Authenticate (anonymous: close 4401), authorise (no role on this cluster: close 4403;
unknown cluster, or one the user cannot see: 4404; see ``core.roles.socket_refusal``,
the same rule as the pipeline sockets), send the snapshot of the subscribed kinds, then forward the
monitor's diffs for those kinds. The client may send ``{"subscribe": ["pods"],
"snapshot": true}`` at any time to change what it receives. Reads only.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.generic.websocket import JsonWebsocketConsumer

from core import roles

from . import events, snapshot
from .models import Cluster
from .projection import PROJECTIONS as WATCHED  # Not monitor: no async client here.

KINDS = frozenset(WATCHED)


def _kinds(value: Any) -> set[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return set()
    return {str(v) for v in value} & KINDS


class ClusterConsumer(JsonWebsocketConsumer):
    """Forward one cluster's changes to one browser tab."""

    cluster_id: int
    kinds: set[str]

    def connect(self) -> None:
        # Accept first and then close with a code: closing during the handshake
        # becomes a bare HTTP 403, and the browser could not tell why.
        self.accept()
        user = self.scope.get("user")
        cluster_id = int(self.scope["url_route"]["kwargs"]["cluster_id"])
        signed_in = user is not None and user.is_authenticated
        exists = signed_in and Cluster.objects.filter(pk=cluster_id).exists()
        code = roles.socket_refusal(
            user, roles.VIEWER, roles.cluster(cluster_id) if exists else None
        )
        if code is not None:
            self.close(code=code)
            return
        self.cluster_id = cluster_id
        query = self._query()
        self.kinds = _kinds(query["kinds"]) if "kinds" in query else set(KINDS)
        async_to_sync(self.channel_layer.group_add)(
            events.group_name(self.cluster_id), self.channel_name
        )
        self._send_snapshot(self.kinds, objects=query.get("snapshot") != "0")

    def disconnect(self, code: int) -> None:
        if getattr(self, "cluster_id", None) is not None and self.channel_layer:
            async_to_sync(self.channel_layer.group_discard)(
                events.group_name(self.cluster_id), self.channel_name
            )

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or "subscribe" not in content:
            return
        new = _kinds(content["subscribe"])
        added = new - self.kinds
        self.kinds = new
        # "snapshot": true re-sends every subscribed kind (a reconnecting page);
        # otherwise only newly added kinds get theirs.
        wanted = new if content.get("snapshot") is True else added
        if content.get("snapshot", True) and wanted:
            self._send_snapshot(wanted, objects=True)

    def _query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        raw = self.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(raw, keep_blank_values=True))

    def _send_snapshot(self, kinds: set[str], *, objects: bool) -> None:
        state = snapshot.read_state(self.cluster_id)
        self.send_json(
            {
                "type": "state",
                "stale": snapshot.is_stale(state),
                "status": {
                    "reachable": state.get("reachable") == "1",
                    "error": state.get("error", ""),
                    "metrics": state.get("metrics", "unknown"),
                },
            }
        )
        if not objects:
            return
        for kind in sorted(kinds):
            self.send_json(
                {
                    "type": "snapshot",
                    "kind": kind,
                    "objects": snapshot.read_objects(self.cluster_id, kind),
                }
            )

    # Channel-layer handlers.

    def cluster_change(self, event: dict[str, Any]) -> None:
        changes = [c for c in event.get("changes", []) if c.get("kind") in self.kinds]
        if not changes and "status" not in event:
            return
        message: dict[str, Any] = {
            "type": "change",
            "changes": changes,
            "stale": event.get("stale", False),
        }
        if "status" in event:
            message["status"] = event["status"]
        self.send_json(message)

    def cluster_metrics(self, event: dict[str, Any]) -> None:
        if "nodes" in self.kinds:
            self.send_json({**event, "type": "metrics"})
