"""Plain factory functions for cluster tests: objects for the fake API server."""

from __future__ import annotations

from typing import Any

import yaml

from clusters.models import Cluster


def make_cluster(server: Any = None, **overrides: Any) -> Cluster:
    """Create a Cluster row; pointing at SERVER (a FakeKubeServer) when given."""
    fields: dict[str, Any] = {"name": "fake", "auth_mode": Cluster.AuthMode.KUBECONFIG}
    if server is not None:
        fields["kubeconfig"] = yaml.safe_dump(server.kubeconfig())
        fields["context"] = "fakekube"
        fields["api_server"] = server.url
    fields.update(overrides)
    return Cluster.objects.create(**fields)


def node(name: str, *, ready: bool = True, **extra: Any) -> dict:
    """Return a Node manifest."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": extra.pop("spec", {}),
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "v1.36.2"},
        },
        **extra,
    }


def pod(
    name: str,
    namespace: str = "demo",
    *,
    node_name: str = "",
    labels: dict | None = None,
    owner: dict | None = None,
    phase: str = "Running",
) -> dict:
    """Return a Pod manifest (running and ready on NODE_NAME when given)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "controller": True,
                "uid": "00000000-0000-0000-0000-000000000000",
                **owner,
            }
        ]
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.27",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            }
        ]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": True, "restartCount": 0, "image": "nginx"}
            ],
        },
    }


def deployment(name: str, namespace: str = "demo", replicas: int = 2) -> dict:
    """Return a Deployment manifest with one container named app."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
