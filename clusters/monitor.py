"""The cluster monitor: list+watch every cluster, keep a snapshot, push diffs.

One :class:`Monitor` runs per installation (``manage.py monitor_clusters``). It holds
a Redis lock with a TTL it keeps renewing; other monitors wait as hot standbys and
take over within one TTL when the active one dies. While active it re-reads the
cluster table every few seconds and runs one :class:`ClusterWatcher` per monitored
cluster.

A watcher, for each watched kind: lists (paged), then watches from the list's
resourceVersion with bookmarks, resumes from the last resourceVersion when a watch
ends or drops, relists on 410 Gone, and backs off exponentially (with jitter) while
the API server is unreachable. It keeps only a compact projection per object
(``clusters.projection``), as its JSON text, writes changes to the Redis snapshot
(with the pods' index, ``snapshot.stage_changes``) and publishes them to
``cluster.<id>`` in batches every ~300 ms. A probe asks ``/version`` every few
seconds, so an unreachable cluster is marked within seconds and recovers by itself;
metrics.k8s.io is sampled when the cluster serves it.

Memory is what bounds the cluster size one monitor can follow: a pod decoded from
JSON is ~17 kB of Python objects, its projection's text ~0.3 kB. So a list is
projected page by page as it arrives (raw JSON, never the client's model classes),
and nothing but projections outlives a page or a watch event.

All API traffic goes through ``kubernetes_asyncio``; clients come from
``kube.build_async_client`` (the one place that reads stored credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from kubernetes_asyncio import client as ak8s
from kubernetes_asyncio import watch as ak8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from . import events, kube, projection, snapshot
from .models import Cluster

log = logging.getLogger("slipway.monitor")

LOCK_NAME = "slipway:monitor:lock"

# kind (plural) -> (API class, list method for all namespaces / cluster scope)
WATCHED: dict[str, tuple[str, str]] = {
    "nodes": ("CoreV1Api", "list_node"),
    "pods": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "deployments": ("AppsV1Api", "list_deployment_for_all_namespaces"),
    "statefulsets": ("AppsV1Api", "list_stateful_set_for_all_namespaces"),
    "daemonsets": ("AppsV1Api", "list_daemon_set_for_all_namespaces"),
    "replicasets": ("AppsV1Api", "list_replica_set_for_all_namespaces"),
    "horizontalpodautoscalers": (
        "AutoscalingV2Api",
        "list_horizontal_pod_autoscaler_for_all_namespaces",
    ),
    "events": ("CoreV1Api", "list_event_for_all_namespaces"),
    "services": ("CoreV1Api", "list_service_for_all_namespaces"),
    "ingresses": ("NetworkingV1Api", "list_ingress_for_all_namespaces"),
    "persistentvolumes": ("CoreV1Api", "list_persistent_volume"),
    "persistentvolumeclaims": (
        "CoreV1Api",
        "list_persistent_volume_claim_for_all_namespaces",
    ),
    "storageclasses": ("StorageV1Api", "list_storage_class"),
}

NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


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


class Gone(Exception):
    """The resourceVersion is too old (410): relist."""


class _NoApiClient:
    """Stands in for the ApiClient a Watch builds only to deserialise objects."""

    async def close(self) -> None:
        return None


class RawWatch(ak8s_watch.Watch):
    """A watch that leaves objects as dicts: deserialising 10,000 pods into model
    classes costs more than the rest of the monitor put together.

    It also skips the default ApiClient that Watch builds for deserialising: each
    loads the system CA store into its own SSL context (~0.8 MB, with 13 watches
    open per cluster); the requests go through the cluster's client anyway."""

    def __init__(self) -> None:
        # Watch.__init__'s fields (kubernetes-asyncio 36), without building a client.
        self._raw_return_type = None
        self._stop = False
        self._api_client = _NoApiClient()
        self.resource_version = None
        self.resp = None

    def get_return_type(self, func: object) -> Any:
        return None


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.attempt = low, high, 0

    def next(self) -> float:
        delay = min(self.high, self.low * (2**self.attempt))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


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
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body) if exc.body else {}
        except (TypeError, ValueError):
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        return f"HTTP {exc.status}: {message or exc.reason}"
    return str(exc) or exc.__class__.__name__


class ClusterWatcher:
    """Watch one cluster until stopped."""

    def __init__(
        self, cluster: Cluster, redis: aioredis.Redis, layer: Any, settings: Settings
    ) -> None:
        self.cluster = cluster
        self.cid = int(cluster.pk)
        self.redis = redis
        self.layer = layer
        self.settings = settings
        self.fingerprint = fingerprint(cluster)
        # kind -> key -> the projection's JSON, exactly as stored in Redis.
        self.objects: dict[str, dict[str, str]] = {k: {} for k in settings.kinds}
        # (kind, key) -> [JSON in Redis now or None, JSON to write or None].
        self.pending: dict[tuple[str, str], list[str | None]] = {}
        self.synced: set[str] = set()
        self.down: set[str] = set()
        self.reachable: bool | None = None
        self.error = ""
        self.metrics_state = "unknown"
        self.state_dirty = True
        self.wake = asyncio.Event()
        self.api: Any = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.last_seen_write = 0.0

    # -- lifecycle

    async def run(self) -> None:
        """Connect and run every loop until cancelled."""
        await self._reset_snapshot()
        try:
            self.api = await kube.build_async_client(self.cluster)
        except kube.CredentialsError as exc:
            await self._set_reachable(False, str(exc))
            await self._flush()
            return
        try:
            self.tasks = [
                asyncio.create_task(self._watch_kind(kind), name=f"{self.cid}:{kind}")
                for kind in self.settings.kinds
            ]
            self.tasks += [
                asyncio.create_task(self._probe_loop()),
                asyncio.create_task(self._metrics_loop()),
                asyncio.create_task(self._flush_loop()),
            ]
            await asyncio.gather(*self.tasks)
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.api.close()

    async def _reset_snapshot(self) -> None:
        keys = [snapshot.objects_key(self.cid, k) for k in WATCHED]
        keys.append(snapshot.state_key(self.cid))
        keys += [
            k
            async for k in self.redis.scan_iter(
                match=snapshot.index_pattern(self.cid), count=1000
            )
        ]
        await self.redis.delete(*keys)

    # -- state

    @property
    def stale(self) -> bool:
        return (
            not self.reachable
            or bool(self.down)
            or self.synced != set(self.settings.kinds)
        )

    def status(self) -> dict[str, Any]:
        return {
            "reachable": bool(self.reachable),
            "error": self.error,
            "metrics": self.metrics_state,
        }

    async def _set_reachable(self, ok: bool, error: str = "") -> None:
        now = time.monotonic()
        changed = ok != self.reachable or error != self.error
        self.reachable, self.error = ok, error
        if changed:
            self.state_dirty = True
            log.info(
                "cluster %s %s %s",
                self.cluster.name,
                "reachable" if ok else "unreachable",
                error,
            )
        if ok and (changed or now - self.last_seen_write > 60):
            self.last_seen_write = now
            await sync_to_async(self.cluster.mark_seen)(self.cluster.server_version)
        elif not ok and changed:
            await sync_to_async(self.cluster.mark_unreachable)(error or "unreachable")
        if ok and changed:
            self.wake.set()

    def _queue(self, kind: str, key: str, old: str | None, new: str | None) -> None:
        entry = self.pending.get((kind, key))
        if entry is None:
            self.pending[(kind, key)] = [old, new]
        else:
            entry[1] = new  # Keep entry[0]: the index update needs what Redis has.

    def _apply(self, kind: str, type_: str, raw: dict[str, Any]) -> None:
        key = projection.key_of(raw)
        current = self.objects[kind]
        old = current.get(key)
        if type_ == "DELETED":
            if old is not None:
                del current[key]
                self._queue(kind, key, old, None)
            return
        new = json.dumps(projection.project(kind, raw), separators=(",", ":"))
        if new != old:
            current[key] = new
            self._queue(kind, key, old, new)

    # -- list + watch

    def _list_fn(self, kind: str) -> Callable[..., Any]:
        api_class, method = WATCHED[kind]
        return getattr(getattr(ak8s, api_class)(self.api), method)

    async def _relist(self, kind: str) -> str:
        """List KIND page by page, diff against memory, return the resourceVersion.

        Each page is decoded, projected and dropped before the next is asked for:
        the peak is one page of whole objects, not the whole list."""
        fn = self._list_fn(kind)
        seen: set[str] = set()
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.settings.page_size}
            if token:
                kwargs["_continue"] = token
            resp = await fn(**kwargs, _preload_content=False, _request_timeout=(5, 60))
            try:
                body = await resp.read()
                if not 200 <= resp.status <= 299:
                    raise ApiException(status=resp.status, reason=body.decode())
            finally:
                resp.release()
            data = json.loads(body)
            del body
            meta = data.get("metadata") or {}
            if not rv:
                rv = str(meta.get("resourceVersion", ""))
            token = meta.get("continue")
            for item in data.get("items") or []:
                seen.add(projection.key_of(item))
                self._apply(kind, "ADDED", item)
            del data
            if not token:
                break
        current = self.objects[kind]
        for key in [k for k in current if k not in seen]:
            self._queue(kind, key, current.pop(key), None)
        return rv

    async def _watch(self, kind: str, rv: str) -> str:
        """Watch KIND from RV until the server ends the stream; return the last RV."""
        timeout = self.settings.watch_timeout + random.randint(0, 30)
        w = RawWatch()
        try:
            stream = w.stream(
                self._list_fn(kind),
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=5, sock_read=timeout + 15
                ),
            )
            async for event in stream:
                type_ = event["type"]
                raw = event["raw_object"]
                new_rv = (raw.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
                if type_ in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, type_, raw)
                if kind in self.down:
                    self.down.discard(kind)
                    self.state_dirty = True
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(str(exc.reason)) from None
            raise
        finally:
            await w.close()
        return rv

    async def _watch_kind(self, kind: str) -> None:
        backoff = Backoff(self.settings.backoff_min, self.settings.backoff_max)
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._relist(kind)
                    if kind not in self.synced or kind in self.down:
                        self.synced.add(kind)
                        self.down.discard(kind)
                        self.state_dirty = True
                    await self._set_reachable(True)
                rv = await self._watch(kind, rv)
                backoff.reset()
            except Gone:
                log.info("cluster %s %s: 410 Gone, relisting", self.cluster.name, kind)
                rv = None
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    rv = None
                    continue
                if exc.status >= 500:
                    await self._set_reachable(False, _error_text(exc))
                await self._on_error(
                    kind, exc, backoff, refused=exc.status in (401, 403)
                )
            except NETWORK_ERRORS as exc:
                await self._on_error(kind, exc, backoff)
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happens.
                log.exception(
                    "cluster %s %s: unexpected error", self.cluster.name, kind
                )
                await self._on_error(kind, exc, backoff)

    async def _on_error(
        self, kind: str, exc: BaseException, backoff: Backoff, refused: bool = False
    ) -> None:
        if kind not in self.down:
            self.down.add(kind)
            self.state_dirty = True
        if refused:
            # The server answers but refuses this identity: reachable, with an error.
            await self._set_reachable(True, f"{kind}: {_error_text(exc)}")
        elif isinstance(exc, NETWORK_ERRORS):
            await self._set_reachable(False, _error_text(exc))
        delay = backoff.next()
        self.wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wake.wait(), delay)

    # -- probe, metrics, flush

    async def _probe_loop(self) -> None:
        version_api = ak8s.VersionApi(self.api)
        while True:
            try:
                info = await version_api.get_code(
                    _request_timeout=self.settings.probe_timeout
                )
                if self.cluster.server_version != info.git_version:
                    self.cluster.server_version = info.git_version
                    self.last_seen_write = 0
                # A watch that is still refused keeps its error on display.
                await self._set_reachable(True, self.error if self.down else "")
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                # 5xx: the API server (or the balancer in front of it) is not
                # serving; 4xx: it answers but refuses us.
                await self._set_reachable(exc.status < 500, _error_text(exc))
            except Exception as exc:  # noqa: BLE001 - network, TLS, timeout.
                await self._set_reachable(False, _error_text(exc))
            await asyncio.sleep(self.settings.probe_interval)

    async def _metrics_loop(self) -> None:
        custom = ak8s.CustomObjectsApi(self.api)
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            if not self.reachable:
                continue
            try:
                nodes = await custom.list_cluster_custom_object(
                    "metrics.k8s.io", "v1beta1", "nodes", _request_timeout=10
                )
                pods = await custom.list_cluster_custom_object(
                    "metrics.k8s.io", "v1beta1", "pods", _request_timeout=30
                )
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 404 and self.metrics_state != "none":
                    self.metrics_state = "none"
                    self.state_dirty = True
                continue
            except Exception:  # noqa: BLE001 - the probe reports reachability.
                continue
            if self.metrics_state != "ok":
                self.metrics_state = "ok"
                self.state_dirty = True
            await self._store_metrics(nodes, pods)

    async def _store_metrics(self, nodes: dict, pods: dict) -> None:
        node_usage = {
            n["metadata"]["name"]: {
                "cpu": projection.cpu_millicores((n.get("usage") or {}).get("cpu")),
                "mem": projection.memory_bytes((n.get("usage") or {}).get("memory")),
            }
            for n in nodes.get("items") or []
        }
        pod_usage = {}
        for p in pods.get("items") or []:
            cpu = mem = 0
            for c in p.get("containers") or []:
                cpu += projection.cpu_millicores((c.get("usage") or {}).get("cpu"))
                mem += projection.memory_bytes((c.get("usage") or {}).get("memory"))
            pod_usage[projection.key_of(p)] = {"cpu": cpu, "mem": mem}
        totals = {
            "at": int(time.time()),
            "cpu": sum(u["cpu"] for u in node_usage.values()),
            "mem": sum(u["mem"] for u in node_usage.values()),
        }
        pipe = self.redis.pipeline(transaction=True)
        for kind, usage in (("nodes", node_usage), ("pods", pod_usage)):
            key = snapshot.usage_key(self.cid, kind)
            pipe.delete(key)
            if usage:
                pipe.hset(key, mapping={k: json.dumps(v) for k, v in usage.items()})
        pipe.lpush(snapshot.history_key(self.cid), json.dumps(totals))
        pipe.ltrim(snapshot.history_key(self.cid), 0, snapshot.HISTORY_LEN - 1)
        await pipe.execute()
        await events.publish_metrics(
            self.layer,
            self.cid,
            {"metrics": "ok", "nodes": node_usage, "totals": totals},
        )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            await self._flush()

    async def _flush(self) -> None:
        """Write pending changes and state to Redis, then publish them."""
        if not self.pending and not self.state_dirty:
            return
        by_kind: dict[str, list[snapshot.Change]] = {}
        changes: list[dict[str, Any]] = []
        for (kind, key), (old, new) in self.pending.items():
            if old == new:
                continue  # Created and deleted (or changed back) between flushes.
            by_kind.setdefault(kind, []).append((key, old, new))
            if new is None:
                changes.append({"kind": kind, "op": "delete", "key": key})
            else:
                changes.append(
                    {"kind": kind, "op": "upsert", "key": key, "obj": json.loads(new)}
                )
        self.pending.clear()
        state_changed = self.state_dirty
        self.state_dirty = False
        pipe = self.redis.pipeline(transaction=True)
        for kind, staged in by_kind.items():
            snapshot.stage_changes(pipe, self.cid, kind, staged)
        state = {
            "reachable": "1" if self.reachable else "0",
            "error": self.error,
            "metrics": self.metrics_state,
            "stale": "1" if self.stale else "0",
            "updated_at": str(int(time.time())),
            **{f"synced:{k}": "1" if k in self.synced else "0" for k in WATCHED},
        }
        pipe.hset(snapshot.state_key(self.cid), mapping=state)
        await pipe.execute()
        try:
            await events.publish_changes(
                self.layer,
                self.cid,
                changes,
                stale=self.stale,
                status=self.status() if state_changed else None,
            )
        except Exception:  # noqa: BLE001 - the layer is best-effort; Redis has it.
            log.warning("cluster %s: publish failed", self.cluster.name, exc_info=True)


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
                except NETWORK_ERRORS + (aioredis.RedisError,):
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
