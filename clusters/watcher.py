"""The per-cluster watcher: list+watch one cluster, keep its snapshot, push diffs.

A :class:`ClusterWatcher` runs one stream per watched kind, across the cluster, or,
when the cluster names namespaces (``Cluster.namespaces``), one per namespace for
each namespaced kind: an identity that a Role lets into some namespaces only cannot
list across the cluster. Each stream lists (paged), then watches from the list's
resourceVersion with bookmarks, resumes from the last resourceVersion when a watch
ends or drops, relists on 410 Gone, and backs off exponentially (with jitter) while
the API server is unreachable. A stream is up again as soon as its watch is
accepted, not at its first event. A stream the server refuses (403) is recorded as
not permitted, not as down: the pages say so, and it is retried slowly in case RBAC
changes. It keeps only a compact projection per object (``clusters.projection``),
as its JSON text, writes changes to the Redis snapshot (with the pods' index,
``snapshot.stage_changes``) and publishes them to ``cluster.<id>`` in batches every
~300 ms. A probe asks ``/version`` every few seconds, so an unreachable cluster is
marked within seconds and recovers by itself; metrics.k8s.io is sampled when the
cluster serves it (pods per watched namespace when namespaces are named).

Memory is what bounds the cluster size one monitor can follow: a pod decoded from
JSON is ~17 kB of Python objects, its projection's text ~0.3 kB. So a list is
projected page by page as it arrives (raw JSON, never the client's model classes),
and nothing but projections outlives a page or a watch event.

All API traffic goes through ``kubernetes_asyncio``; clients come from
``kube.build_async_client`` (the one place that reads stored credentials). This
module imports that client and aiohttp (~43 MiB of RSS):
:class:`clusters.monitor.Monitor` imports it only when the first monitored cluster
appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from kubernetes_asyncio import client as ak8s
from kubernetes_asyncio import watch as ak8s_watch
from kubernetes_asyncio.client import rest as ak8s_rest
from kubernetes_asyncio.client.exceptions import ApiException

from . import events, kube, projection, snapshot
from .models import Cluster
from .monitor import WATCHED, Settings, fingerprint

log = logging.getLogger("slipway.monitor")

# One list+watch: a kind, and its namespace (None: across the cluster, or a
# cluster-scoped kind).
Stream = tuple[str, str | None]

# Connections a watcher needs besides its watches: the probe, metrics, a relist.
SPARE_CONNECTIONS = 10

NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


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


def _api_error(status: int, body: bytes) -> ApiException:
    """Return the ApiException for an answer read with ``_preload_content=False``."""
    text = body.decode("utf-8", "replace")
    exc = ApiException(status=status, reason=text[:200])
    exc.body = text  # What _error_text reads the Status message from.
    return exc


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body) if exc.body else {}
        except (TypeError, ValueError):
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        return f"HTTP {exc.status}: {message or exc.reason}"
    return str(exc) or exc.__class__.__name__


def _name(stream: Stream) -> str:
    """Return how logs and errors name STREAM: ``pods`` or ``pods in team-a``."""
    kind, namespace = stream
    return f"{kind} in {namespace}" if namespace else kind


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
        # Empty: across the cluster (the *_for_all_namespaces lists).
        self.namespaces: tuple[str, ...] = tuple(sorted(cluster.namespaces or ()))
        self.streams: list[Stream] = [
            (kind, ns)
            for kind in settings.kinds
            for ns in (
                self.namespaces if self.namespaces and WATCHED[kind][2] else [None]
            )
        ]
        # kind -> key -> the projection's JSON, exactly as stored in Redis.
        self.objects: dict[str, dict[str, str]] = {k: {} for k in settings.kinds}
        # (kind, key) -> [JSON in Redis now or None, JSON to write or None].
        self.pending: dict[tuple[str, str], list[str | None]] = {}
        self.synced: set[Stream] = set()
        self.down: set[Stream] = set()
        # Streams the server refuses this identity (403): not permitted, not down.
        self.forbidden: set[Stream] = set()
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
            await self._size_pool()
            self.tasks = [
                asyncio.create_task(
                    self._watch_stream(stream), name=f"{self.cid}:{_name(stream)}"
                )
                for stream in self.streams
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

    async def _size_pool(self) -> None:
        """Let the client open a connection per watch, plus a few spare.

        A watch holds its connection for minutes, and the client queues requests
        beyond its pool (100 by default): with many namespaces the probe would
        wait behind the watches and the cluster would look unreachable. The pool
        is built with the client, so replace it (before any request) with a
        bigger one of the same configuration."""
        config = self.api.configuration
        needed = len(self.streams) + SPARE_CONNECTIONS
        if (
            config.connection_pool_maxsize is None
            or config.connection_pool_maxsize >= needed
        ):
            return
        await self.api.rest_client.close()
        config.connection_pool_maxsize = needed
        self.api.rest_client = ak8s_rest.RESTClientObject(config)

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
        """Return whether a page may show out-of-date data: a stream is down or not
        listed yet (one the server refuses is not permitted, not stale)."""
        return (
            not self.reachable
            or bool(self.down)
            or any(
                s not in self.synced and s not in self.forbidden for s in self.streams
            )
        )

    def status(self) -> dict[str, Any]:
        return {
            "reachable": bool(self.reachable),
            "error": self.error,
            "metrics": self.metrics_state,
        }

    def _state_fields(self) -> dict[str, str]:
        """Return the per-kind fields of the state hash (see ``clusters.snapshot``)."""
        fields: dict[str, str] = {"namespaces": ",".join(self.namespaces)}
        for kind in WATCHED:
            streams = [s for s in self.streams if s[0] == kind]
            listed = bool(streams) and all(s in self.synced for s in streams)
            refused = [s for s in streams if s in self.forbidden]
            fields[f"synced:{kind}"] = "1" if listed else "0"
            if any(ns is None for _kind, ns in refused):
                fields[f"forbidden:{kind}"] = "*"
            else:
                fields[f"forbidden:{kind}"] = ",".join(str(ns) for _k, ns in refused)
        return fields

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

    def _mark_up(self, stream: Stream) -> None:
        """Record that STREAM's list or watch connection was accepted just now."""
        if stream in self.down or stream in self.forbidden:
            self.down.discard(stream)
            self.forbidden.discard(stream)
            self.state_dirty = True

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

    def _drop_missing(self, stream: Stream, seen: set[str]) -> None:
        """Delete the objects of STREAM's scope that are not in SEEN."""
        kind, namespace = stream
        current = self.objects[kind]
        prefix = f"{namespace}/" if namespace else ""
        gone = [k for k in current if k.startswith(prefix) and k not in seen]
        for key in gone:
            self._queue(kind, key, current.pop(key), None)

    # -- list + watch

    def _list_fn(self, stream: Stream) -> Callable[..., Any]:
        kind, namespace = stream
        api_class, across, in_namespace = WATCHED[kind]
        api = getattr(ak8s, api_class)(self.api)
        if namespace is None:
            return getattr(api, across)
        return partial(getattr(api, in_namespace), namespace)

    async def _relist(self, stream: Stream) -> str:
        """List STREAM page by page, diff against memory, return the resourceVersion.

        Each page is decoded, projected and dropped before the next is asked for:
        the peak is one page of whole objects, not the whole list."""
        kind = stream[0]
        fn = self._list_fn(stream)
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
                    raise _api_error(resp.status, body)
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
        self._drop_missing(stream, seen)
        return rv

    async def _watch(self, stream: Stream, rv: str) -> str:
        """Watch STREAM from RV until the server ends the stream; return the last RV.

        The stream counts as up as soon as the server accepts the watch: on a
        quiet kind the first event may be the bookmark a minute later, and the
        "stale" marker must not outlast an outage by that long."""
        kind = stream[0]
        fn = self._list_fn(stream)

        async def open_watch(**kwargs: Any) -> Any:
            resp = await fn(**kwargs)
            if not 200 <= resp.status <= 299:
                try:
                    body = await resp.read()
                finally:
                    resp.release()
                raise _api_error(resp.status, body)
            self._mark_up(stream)
            return resp

        timeout = self.settings.watch_timeout + random.randint(0, 30)
        w = RawWatch()
        try:
            events_ = w.stream(
                open_watch,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=5, sock_read=timeout + 15
                ),
            )
            async for event in events_:
                type_ = event["type"]
                raw = event["raw_object"]
                new_rv = (raw.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
                if type_ in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, type_, raw)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(str(exc.reason)) from None
            raise
        finally:
            await w.close()
        return rv

    async def _watch_stream(self, stream: Stream) -> None:
        backoff = Backoff(self.settings.backoff_min, self.settings.backoff_max)
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._relist(stream)
                    if stream not in self.synced:
                        self.synced.add(stream)
                        self.state_dirty = True
                    self._mark_up(stream)
                    await self._set_reachable(True)
                rv = await self._watch(stream, rv)
                backoff.reset()
            except Gone:
                log.info(
                    "cluster %s %s: 410 Gone, relisting",
                    self.cluster.name,
                    _name(stream),
                )
                # Stale until the relist has caught up with what the watch missed.
                self._mark_down(stream)
                rv = None
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    self._mark_down(stream)
                    rv = None
                    continue
                if exc.status == 403:
                    await self._on_forbidden(stream, exc)
                    rv = None  # Relist once permitted: the watch missed everything.
                    continue
                if exc.status >= 500:
                    await self._set_reachable(False, _error_text(exc))
                await self._on_error(stream, exc, backoff, refused=exc.status == 401)
            except NETWORK_ERRORS as exc:
                await self._on_error(stream, exc, backoff)
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happens.
                log.exception(
                    "cluster %s %s: unexpected error", self.cluster.name, _name(stream)
                )
                await self._on_error(stream, exc, backoff)

    def _mark_down(self, stream: Stream) -> None:
        if stream not in self.down:
            self.down.add(stream)
            self.state_dirty = True

    async def _on_forbidden(self, stream: Stream, exc: ApiException) -> None:
        """Record STREAM as not permitted, forget what it showed, wait to retry.

        RBAC rarely changes, so this is no outage to retry quickly: wait the
        longest backoff. What the stream listed before is dropped, since nothing
        would keep it current."""
        if stream not in self.forbidden:
            log.info(
                "cluster %s %s: not permitted: %s",
                self.cluster.name,
                _name(stream),
                _error_text(exc),
            )
            self.forbidden.add(stream)
            self.down.discard(stream)
            self.synced.discard(stream)
            self._drop_missing(stream, set())
            self.state_dirty = True
        # The server answered: reachable, and no cluster-wide error for one kind.
        if not self.reachable:
            await self._set_reachable(True)
        high = self.settings.backoff_max
        await self._sleep(random.uniform(high / 2, high))

    async def _on_error(
        self,
        stream: Stream,
        exc: BaseException,
        backoff: Backoff,
        refused: bool = False,
    ) -> None:
        self._mark_down(stream)
        if refused:
            # The server answers but refuses this identity: reachable, with an error.
            await self._set_reachable(True, f"{_name(stream)}: {_error_text(exc)}")
        elif isinstance(exc, NETWORK_ERRORS):
            await self._set_reachable(False, _error_text(exc))
        await self._sleep(backoff.next())

    async def _sleep(self, delay: float) -> None:
        """Sleep DELAY seconds, or less when the cluster becomes reachable again."""
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
                nodes, pods = await self._read_metrics(custom)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 404 and self.metrics_state != "none":
                    self.metrics_state = "none"
                    self.state_dirty = True
                continue
            except Exception:  # noqa: BLE001 - the probe reports reachability.
                continue
            state = "forbidden" if nodes is None and pods is None else "ok"
            if self.metrics_state != state:
                self.metrics_state = state
                self.state_dirty = True
            if state == "ok":
                await self._store_metrics(nodes, pods)

    async def _read_metrics(
        self, custom: Any
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Return node and pod metrics lists, None for one this identity may not read.

        Pods are read per watched namespace when the cluster names namespaces, so
        usage never covers pods the snapshot does not hold. A 404 (no
        metrics-server) is raised."""

        async def read(call: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
            try:
                return await call(
                    "metrics.k8s.io", "v1beta1", *args, _request_timeout=30
                )
            except ApiException as exc:
                if exc.status == 403:
                    return None
                raise

        nodes = await read(custom.list_cluster_custom_object, "nodes")
        if not self.namespaces:
            return nodes, await read(custom.list_cluster_custom_object, "pods")
        lists = [
            await read(custom.list_namespaced_custom_object, ns, "pods")
            for ns in self.namespaces
        ]
        allowed = [x for x in lists if x is not None]
        if not allowed:
            return nodes, None
        return nodes, {"items": [i for x in allowed for i in x.get("items") or []]}

    async def _store_metrics(
        self, nodes: dict[str, Any] | None, pods: dict[str, Any] | None
    ) -> None:
        """Store the latest usage; append the cluster totals to the capped history.

        Totals are the nodes' usage: without node metrics (refused to an identity
        confined to some namespaces) there is no total, and none is recorded
        rather than a zero."""
        node_usage = {
            n["metadata"]["name"]: {
                "cpu": projection.cpu_millicores((n.get("usage") or {}).get("cpu")),
                "mem": projection.memory_bytes((n.get("usage") or {}).get("memory")),
            }
            for n in (nodes or {}).get("items") or []
        }
        pod_usage = {}
        for p in (pods or {}).get("items") or []:
            cpu = mem = 0
            for c in p.get("containers") or []:
                cpu += projection.cpu_millicores((c.get("usage") or {}).get("cpu"))
                mem += projection.memory_bytes((c.get("usage") or {}).get("memory"))
            pod_usage[projection.key_of(p)] = {"cpu": cpu, "mem": mem}
        totals = None
        if nodes is not None:
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
        if totals is not None:
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
            **self._state_fields(),
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
