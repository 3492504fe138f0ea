"""The cluster monitor: a lock, hot standby, one watcher per monitored cluster.

One :class:`Monitor` runs per installation (``manage.py monitor_clusters``). It holds
a Redis lock with a TTL it keeps renewing; other monitors wait as hot standbys and
take over within one TTL when the active one dies. While active it re-reads the
cluster table every few seconds and runs one ``clusters.watcher.ClusterWatcher``
per monitored cluster (list+watch of every kind, snapshot in Redis, diffs to
``cluster.<id>``; see that module).

This module stays import-light: the watcher needs ``kubernetes_asyncio`` and
aiohttp (~43 MiB of RSS), so it is imported when the first monitored cluster
appears, and a monitor of an installation with no cluster (or a standby) never
loads them. Its names
(``ClusterWatcher``, ``Backoff``...) are still reachable here, imported on access.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async

from .models import Cluster

if TYPE_CHECKING:
    from .watcher import ClusterWatcher

log = logging.getLogger("slipway.monitor")

# What clusters.watcher defines and callers may still look up here.
_WATCHER_NAMES = frozenset(
    {"ClusterWatcher", "RawWatch", "Backoff", "Gone", "Stream", "NETWORK_ERRORS"}
)


def __getattr__(name: str) -> Any:
    """Return NAME from ``clusters.watcher``, importing it on first access."""
    if name in _WATCHER_NAMES:
        from . import watcher

        return getattr(watcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LOCK_NAME = "slipway:monitor:lock"

# kind (plural) -> (API class, list method across the cluster, list method in one
# namespace: "" for a cluster-scoped kind).
WATCHED: dict[str, tuple[str, str, str]] = {
    "nodes": ("CoreV1Api", "list_node", ""),
    "pods": ("CoreV1Api", "list_pod_for_all_namespaces", "list_namespaced_pod"),
    "deployments": (
        "AppsV1Api",
        "list_deployment_for_all_namespaces",
        "list_namespaced_deployment",
    ),
    "statefulsets": (
        "AppsV1Api",
        "list_stateful_set_for_all_namespaces",
        "list_namespaced_stateful_set",
    ),
    "daemonsets": (
        "AppsV1Api",
        "list_daemon_set_for_all_namespaces",
        "list_namespaced_daemon_set",
    ),
    "replicasets": (
        "AppsV1Api",
        "list_replica_set_for_all_namespaces",
        "list_namespaced_replica_set",
    ),
    "horizontalpodautoscalers": (
        "AutoscalingV2Api",
        "list_horizontal_pod_autoscaler_for_all_namespaces",
        "list_namespaced_horizontal_pod_autoscaler",
    ),
    "events": ("CoreV1Api", "list_event_for_all_namespaces", "list_namespaced_event"),
    "services": (
        "CoreV1Api",
        "list_service_for_all_namespaces",
        "list_namespaced_service",
    ),
    "ingresses": (
        "NetworkingV1Api",
        "list_ingress_for_all_namespaces",
        "list_namespaced_ingress",
    ),
    "persistentvolumes": ("CoreV1Api", "list_persistent_volume", ""),
    "persistentvolumeclaims": (
        "CoreV1Api",
        "list_persistent_volume_claim_for_all_namespaces",
        "list_namespaced_persistent_volume_claim",
    ),
    "storageclasses": ("StorageV1Api", "list_storage_class", ""),
}


@dataclass
class Settings:
    """Timings of the monitor (tests shorten them)."""

    refresh_interval: float = 10.0
    lock_ttl: float = 15.0
    flush_interval: float = 0.3
    probe_interval: float = 5.0
    probe_timeout: float = 3.0
    metrics_interval: float = 5.0
    watch_timeout: int = 300
    page_size: int = 500
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    kinds: tuple[str, ...] = tuple(WATCHED)


def fingerprint(cluster: Cluster) -> str:
    """Return a digest of everything that changes how we connect to CLUSTER."""
    parts = [
        cluster.auth_mode,
        cluster.api_server,
        cluster.kubeconfig,
        cluster.context,
        cluster.token,
        cluster.ca_cert,
        str(cluster.verify_tls),
        ",".join(cluster.namespaces or []),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class Monitor:
    """One monitor process: a lock, hot standby, one watcher per cluster."""

    def __init__(
        self,
        redis_url: str,
        layer: Any,
        settings: Settings | None = None,
        identity: str | None = None,
    ) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=5, socket_connect_timeout=2
        )
        self.layer = layer
        self.settings = settings or Settings()
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.active = asyncio.Event()
        self.watchers: dict[int, tuple[ClusterWatcher, asyncio.Task[Any]]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for the lock, watch while holding it; return when STOP is set."""
        try:
            while not stop.is_set():
                lock = self.redis.lock(
                    LOCK_NAME, timeout=self.settings.lock_ttl, thread_local=False
                )
                try:
                    got = await lock.acquire(blocking=False)
                except (TimeoutError, OSError, aioredis.RedisError):
                    got = False
                if got:
                    log.info("monitor %s: active", self.identity)
                    await self._run_active(lock, stop)
                    log.info("monitor %s: no longer active", self.identity)
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.lock_ttl / 3)
        finally:
            await self.redis.aclose()

    async def _run_active(self, lock: Any, stop: asyncio.Event) -> None:
        self.active.set()
        renew_every = self.settings.lock_ttl / 3
        next_refresh = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    await self._refresh()
                    next_refresh = now + self.settings.refresh_interval
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), min(renew_every, self.settings.refresh_interval)
                    )
                try:
                    await lock.reacquire()
                except Exception:  # noqa: BLE001 - lost or Redis down: stand by.
                    log.warning("monitor %s: lost the lock", self.identity)
                    return
        finally:
            self.active.clear()
            await self._stop_all()
            with contextlib.suppress(Exception):
                await lock.release()

    async def _refresh(self) -> None:
        """Start watchers for new clusters, stop them for removed or changed ones."""
        try:
            clusters = await sync_to_async(
                lambda: list(Cluster.objects.for_monitor())
            )()
        except Exception:  # noqa: BLE001 - database hiccup: keep what runs.
            log.warning("monitor: cannot read clusters", exc_info=True)
            return
        wanted = {c.pk: c for c in clusters}
        for cid in list(self.watchers):
            watcher, task = self.watchers[cid]
            c = wanted.get(cid)
            if c is None or fingerprint(c) != watcher.fingerprint or task.done():
                await self._stop(cid)
        for cid, c in wanted.items():
            if cid not in self.watchers:
                # Here, not at the top: the client libraries load with the first
                # cluster to watch, not with every monitor process.
                from .watcher import ClusterWatcher

                watcher = ClusterWatcher(c, self.redis, self.layer, self.settings)
                task = asyncio.create_task(watcher.run(), name=f"cluster-{cid}")
                self.watchers[cid] = (watcher, task)

    async def _stop(self, cid: int) -> None:
        _watcher, task = self.watchers.pop(cid)
        task.cancel()
        # Bounded: a shutdown must not hang on a connection that will not close.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)

    async def _stop_all(self) -> None:
        for cid in list(self.watchers):
            await self._stop(cid)
