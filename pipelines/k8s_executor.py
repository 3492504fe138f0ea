"""Wire the engine's kubernetes executor to a stored cluster (the Django side).

`get_executor("kubernetes")` builds a `KubernetesExecutor` from the cluster named by
``SLIPWAY_K8S_EXECUTOR_CLUSTER`` and the namespace ``SLIPWAY_K8S_EXECUTOR_NAMESPACE``
(default ``slipway-jobs``), read at each call. A worker probes its executors again
every ``SLIPWAY_CAPABILITY_CHECK_SECONDS`` (30 s; `workers.Announcer.recheck`), so a
cluster added, or becoming reachable, after it started is served from the next check
on, and one deleted or gone unreachable is withdrawn. Without a cluster, or with one
that cannot be reached, the executor says why through ``available()``; the worker
then does not consume kubernetes queues and such jobs wait with that reason shown.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

from .engine.executors import register_executor
from .engine.executors.kubernetes import KubernetesExecutor

DEFAULT_NAMESPACE = "slipway-jobs"


def _setting(name: str, default: str = "") -> str:
    configured: Any = getattr(settings, "SLIPWAY", {}).get(name)
    return str(configured or os.environ.get(f"SLIPWAY_{name}") or default)


def build() -> KubernetesExecutor:
    """Return the kubernetes executor for the configured cluster and namespace."""
    from clusters import kube
    from clusters.models import Cluster

    name = _setting("K8S_EXECUTOR_CLUSTER")
    namespace = _setting("K8S_EXECUTOR_NAMESPACE", DEFAULT_NAMESPACE)
    image = _setting("K8S_EXECUTOR_IMAGE", "alpine:3.20")
    if not name:
        return KubernetesExecutor(
            None,
            namespace,
            unavailable=(
                "no cluster configured for the kubernetes executor "
                "(set SLIPWAY_K8S_EXECUTOR_CLUSTER to a cluster's name)"
            ),
        )
    cluster = Cluster.objects.filter(name=name).first()
    if cluster is None:
        return KubernetesExecutor(
            None,
            namespace,
            unavailable=f"cluster {name!r} (SLIPWAY_K8S_EXECUTOR_CLUSTER) does not exist",
        )
    try:
        configuration = kube.build_configuration(cluster)
    except kube.CredentialsError as exc:
        return KubernetesExecutor(
            None, namespace, unavailable=f"cluster {name!r}: {exc}"
        )
    return KubernetesExecutor(
        configuration, namespace, default_image=image, cluster_name=name
    )


def register() -> None:
    """Make `get_executor("kubernetes")` build the executor from settings."""
    register_executor("kubernetes", build)
