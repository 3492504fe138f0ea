"""The latest state of each cluster, kept in Redis by the monitor for the pages.

Layout (``<p>`` = ``slipway:cluster:<id>``):

- ``<p>:obj:<kind>``   hash ``namespace/name`` -> compact JSON projection
- ``<p>:state``        hash: ``reachable``, ``error``, ``metrics`` (``ok``/``none``),
                       ``synced:<kind>`` ("1" once listed), ``stale`` ("1" while a
                       watch is down), ``updated_at``
- ``<p>:usage:<kind>`` hash key -> ``{"cpu": millicores, "mem": bytes}`` (nodes, pods)
- ``<p>:history``      list of ``{"at", "cpu", "mem"}`` cluster totals, newest first,
                       capped at HISTORY_LEN: the length is the retention.

Reads here are synchronous (views, consumers); the monitor writes through
``redis.asyncio`` with the same key functions.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import redis
from django.conf import settings

HISTORY_LEN = 720  # One hour at one sample every five seconds.


def prefix(cluster_id: int) -> str:
    return f"slipway:cluster:{cluster_id}"


def objects_key(cluster_id: int, kind: str) -> str:
    return f"{prefix(cluster_id)}:obj:{kind}"


def state_key(cluster_id: int) -> str:
    return f"{prefix(cluster_id)}:state"


def usage_key(cluster_id: int, kind: str) -> str:
    return f"{prefix(cluster_id)}:usage:{kind}"


def history_key(cluster_id: int) -> str:
    return f"{prefix(cluster_id)}:history"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def client() -> redis.Redis:
    """Return the shared synchronous Redis client."""
    return _client(settings.REDIS_URL)


def read_objects(cluster_id: int, kind: str) -> dict[str, dict[str, Any]]:
    """Return every projection of KIND: ``{"ns/name": {...}}``."""
    raw = client().hgetall(objects_key(cluster_id, kind))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def read_keys(cluster_id: int, kind: str) -> list[str]:
    """Return the keys of KIND, sorted: no values, so cheap even at 30,000 pods."""
    return sorted(k.decode() for k in client().hkeys(objects_key(cluster_id, kind)))


def read_raw(cluster_id: int, kind: str, keys: list[str]) -> dict[str, bytes]:
    """Return the stored JSON of KEYS (unparsed; keys gone meanwhile are left out)."""
    if not keys:
        return {}
    values = client().hmget(objects_key(cluster_id, kind), keys)
    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


def read_objects_by_key(
    cluster_id: int, kind: str, keys: list[str]
) -> dict[str, dict[str, Any]]:
    """Return the projections of KEYS only (a page of a big list)."""
    return {k: json.loads(v) for k, v in read_raw(cluster_id, kind, keys).items()}


def read_object(cluster_id: int, kind: str, key: str) -> dict[str, Any] | None:
    raw = client().hget(objects_key(cluster_id, kind), key)
    return json.loads(raw) if raw else None


def read_state(cluster_id: int) -> dict[str, str]:
    """Return the monitor's state flags for the cluster ({} before the first list)."""
    raw = client().hgetall(state_key(cluster_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def read_usage(
    cluster_id: int, kind: str, keys: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Return metrics usage for KIND (only KEYS when given)."""
    r = client()
    if keys is not None:
        if not keys:
            return {}
        values = r.hmget(usage_key(cluster_id, kind), keys)
        return {k: json.loads(v) for k, v in zip(keys, values, strict=True) if v}
    raw = r.hgetall(usage_key(cluster_id, kind))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def read_history(cluster_id: int, limit: int = HISTORY_LEN) -> list[dict[str, Any]]:
    """Return cluster usage samples, oldest first."""
    raw = client().lrange(history_key(cluster_id), 0, limit - 1)
    return [json.loads(v) for v in reversed(raw)]


def is_stale(state: dict[str, str]) -> bool:
    """Return whether the pages should say the data may be out of date."""
    return not state or state.get("stale") == "1" or state.get("reachable") == "0"


def forget(cluster_id: int) -> None:
    """Delete everything kept for a cluster (it was removed)."""
    r = client()
    keys = list(r.scan_iter(match=f"{prefix(cluster_id)}:*", count=500))
    if keys:
        r.delete(*keys)
