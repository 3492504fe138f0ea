"""The latest state of each cluster, kept in Redis by the monitor for the pages.

Layout (``<p>`` = ``slipway:cluster:<id>``):

- ``<p>:obj:<kind>``   hash ``namespace/name`` -> compact JSON projection
- ``<p>:state``        hash: ``reachable``, ``error``, ``metrics`` (``ok``, ``none``
                       without metrics-server, ``forbidden`` when this identity may
                       read no metrics), ``synced:<kind>`` ("1" once listed),
                       ``forbidden:<kind>`` (not permitted: "*" across the cluster,
                       else the refused namespaces, comma-separated; "" allowed),
                       ``namespaces`` (the watched ones, comma-separated; "" all),
                       ``stale`` ("1" while a watch is down or a kind not yet
                       listed; not for kinds not permitted), ``updated_at``
- ``<p>:usage:<kind>`` hash key -> ``{"cpu": millicores, "mem": bytes}`` (nodes, pods)
- ``<p>:history``      list of ``{"at", "cpu", "mem"}`` cluster totals, newest first,
                       capped at HISTORY_LEN: the length is the retention.

Pods also have an index, so that a page of a 30,000-pod list costs one page of
reads (``ZRANGE`` + ``HMGET``) instead of every key:

- ``<p>:idx:pods``                every key, score 0: members sort by key, and a
                                  namespace is the lex range ``[ns/ .. (ns0``
- ``<p>:idx:pods:status:<word>``  keys whose phase or reason is WORD
- ``<p>:idx:pods:node:<node>``    keys scheduled on NODE
- ``<p>:idx:pods:search``         ``key NUL lower(owner)``, score 0: what search scans
- ``<p>:idx:pods:namespaces``     namespace -> number of pods (0 once emptied)

Every write goes through :func:`stage_changes`, in the same transaction as the
objects' hash, so readers never see the index and the hash disagree. Reads here are
synchronous (views, consumers); the monitor writes through ``redis.asyncio`` with
the same functions (a pipeline queues commands the same way in both).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import cache
from typing import Any

import redis
from django.conf import settings

HISTORY_LEN = 720  # One hour at one sample every five seconds.

# Kinds with an index (see the module docstring): the big lists the pages page.
INDEXED_KINDS = frozenset({"pods"})

# One change to stage: (key, JSON now in Redis or None, JSON to write or None).
Change = tuple[str, str | None, str | None]


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


def index_key(cluster_id: int, kind: str, *parts: str) -> str:
    """Return the index of KIND: every key, or the facet/search set named by PARTS."""
    return ":".join((f"{prefix(cluster_id)}:idx:{kind}", *parts))


def index_pattern(cluster_id: int) -> str:
    """Return the SCAN pattern matching every index key of the cluster."""
    return f"{prefix(cluster_id)}:idx:*"


# ------------------------------------------------------------------------ writes


def _facets(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """Return the (facet, value) pairs a pod is filtered by (phase or reason, node)."""
    out = {("status", str(obj.get("phase") or "Pending"))}
    if obj.get("reason"):
        out.add(("status", str(obj["reason"])))
    if obj.get("node"):
        out.add(("node", str(obj["node"])))
    return out


def _search_member(key: str, obj: dict[str, Any]) -> str:
    # The key first: members sort by key, and a namespace stays one lex range.
    return f"{key}\0{str(obj.get('owner') or '').lower()}"


def stage_changes(
    pipe: Any, cluster_id: int, kind: str, changes: Iterable[Change]
) -> None:
    """Queue on PIPE the writes of CHANGES to KIND's hash and index.

    PIPE is a sync or asyncio redis pipeline (commands are only queued here, so
    both work); the caller executes it, in a transaction, so a reader never sees
    the hash and the index disagree. Each change names the JSON now stored (None if
    absent): the index entries to remove are derived from it, so it must be exact.
    """
    hset: dict[str, str] = {}
    hdel: list[str] = []
    indexed = kind in INDEXED_KINDS
    zadd: dict[str, dict[str, int]] = defaultdict(dict)
    zrem: dict[str, list[str]] = defaultdict(list)
    namespaces: Counter[str] = Counter()
    everything = index_key(cluster_id, kind)
    search = index_key(cluster_id, kind, "search")
    for key, old_json, new_json in changes:
        if new_json is None:
            hdel.append(key)
        else:
            hset[key] = new_json
        if not indexed:
            continue
        old = json.loads(old_json) if old_json is not None else None
        new = json.loads(new_json) if new_json is not None else None
        old_facets = _facets(old) if old is not None else set()
        new_facets = _facets(new) if new is not None else set()
        for facet in old_facets - new_facets:
            zrem[index_key(cluster_id, kind, *facet)].append(key)
        for facet in new_facets - old_facets:
            zadd[index_key(cluster_id, kind, *facet)][key] = 0
        old_member = _search_member(key, old) if old is not None else None
        new_member = _search_member(key, new) if new is not None else None
        if old_member != new_member:
            if old_member is not None:
                zrem[search].append(old_member)
            if new_member is not None:
                zadd[search][new_member] = 0
        namespace = key.split("/", 1)[0]
        if old is None and new is not None:
            zadd[everything][key] = 0
            namespaces[namespace] += 1
        elif old is not None and new is None:
            zrem[everything].append(key)
            namespaces[namespace] -= 1
    if hset:
        pipe.hset(objects_key(cluster_id, kind), mapping=hset)
    if hdel:
        pipe.hdel(objects_key(cluster_id, kind), *hdel)
    for zkey, members in zrem.items():
        pipe.zrem(zkey, *members)
    for zkey, mapping in zadd.items():
        pipe.zadd(zkey, mapping)
    for namespace, delta in namespaces.items():
        if delta:
            pipe.zincrby(index_key(cluster_id, kind, "namespaces"), delta, namespace)


def write_objects(
    cluster_id: int, kind: str, objects: dict[str, dict[str, Any] | None]
) -> None:
    """Store OBJECTS (None deletes) with their index: what the monitor does, for
    callers outside it (tests, tools)."""
    r = client()
    keys = list(objects)
    if not keys:
        return
    stored = r.hmget(objects_key(cluster_id, kind), keys)
    changes = [
        (
            key,
            old.decode() if old is not None else None,
            json.dumps(objects[key], separators=(",", ":"))
            if objects[key] is not None
            else None,
        )
        for key, old in zip(keys, stored, strict=True)
    ]
    pipe = r.pipeline(transaction=True)
    stage_changes(pipe, cluster_id, kind, changes)
    pipe.execute()


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


# ------------------------------------------------------------------- index reads

# Scan one index set in a lex range, keep the members that match: the needle (in
# the key or the owner, search set only) and membership of every other set in
# KEYS[2..]. Return {matching count, the keys of one page}. Runs inside Redis: at
# 30,000 pods a search is one call of a few milliseconds, not 30,000 values sent.
_FILTER_LUA = """
local search = ARGV[1] == "1"
local needle = ARGV[4]
local offset, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local members
if ARGV[2] == "-" and ARGV[3] == "+" then
  members = redis.call("ZRANGE", KEYS[1], 0, -1)
else
  members = redis.call("ZRANGE", KEYS[1], ARGV[2], ARGV[3], "BYLEX")
end
local total, page = 0, {}
for _, m in ipairs(members) do
  local key = m
  if search then
    -- The needle has no NUL, so a match lies wholly in the key or in the owner.
    if string.find(m, needle, 1, true) then
      key = string.sub(m, 1, string.find(m, "\\0", 1, true) - 1)
    else
      key = nil
    end
  end
  local i = 2
  while key and i <= #KEYS do
    if not redis.call("ZSCORE", KEYS[i], key) then key = nil end
    i = i + 1
  end
  if key then
    total = total + 1
    if total > offset and total <= offset + limit then page[#page + 1] = key end
  end
end
return {total, page}
"""


@cache
def _filter_script(url: str) -> Any:
    return _client(url).register_script(_FILTER_LUA)


def count(cluster_id: int, kind: str) -> int:
    """Return how many objects of KIND (an indexed kind) the snapshot holds."""
    return int(client().zcard(index_key(cluster_id, kind)))


def namespaces(cluster_id: int, kind: str) -> list[str]:
    """Return the namespaces that have objects of KIND (an indexed kind), sorted."""
    raw = client().zrangebyscore(index_key(cluster_id, kind, "namespaces"), 1, "+inf")
    return sorted(v.decode() for v in raw)


def find_keys(
    cluster_id: int,
    kind: str,
    *,
    namespace: str = "",
    status: str = "",
    node: str = "",
    search: str = "",
    offset: int = 0,
    limit: int = 100,
) -> tuple[int, list[str]]:
    """Return how many keys of KIND match, and the LIMIT of them from OFFSET, sorted.

    STATUS matches a phase or a reason, SEARCH a substring of the key or of the
    lowercased owner (pass it lowercased). Without search and with at most one
    facet this is ZLEXCOUNT + ZRANGE on one set; otherwise one script scans the
    smallest candidate set inside Redis.
    """
    if namespace:
        # "/" + 1 is "0": every key of the namespace, and only those.
        lo, hi = f"[{namespace}/", f"({namespace}0"
    else:
        lo, hi = "-", "+"
    facets = [index_key(cluster_id, kind, "status", status)] if status else []
    if node:
        facets.append(index_key(cluster_id, kind, "node", node))
    if "\0" in search:
        return 0, []  # No key or owner holds a NUL (and it separates them in the set).
    r = client()
    if not search and len(facets) <= 1:
        base = facets[0] if facets else index_key(cluster_id, kind)
        pipe = r.pipeline(transaction=False)
        pipe.zlexcount(base, lo, hi)
        pipe.zrange(base, lo, hi, bylex=True, offset=offset, num=limit)
        total, keys = pipe.execute()
        return int(total), [k.decode() for k in keys]
    if search:
        scan, others = index_key(cluster_id, kind, "search"), facets
    else:
        # Scan the smaller set, test membership of the other.
        first, second = (
            r.pipeline(transaction=False).zcard(facets[0]).zcard(facets[1]).execute()
        )
        if int(second) < int(first):
            facets.reverse()
        scan, others = facets[0], facets[1:]
    total, keys = _filter_script(settings.REDIS_URL)(
        keys=[scan, *others],
        args=["1" if search else "0", lo, hi, search, offset, limit],
        client=r,
    )
    return int(total), [k.decode() for k in keys]


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


def not_permitted(state: dict[str, str]) -> dict[str, list[str]]:
    """Return the kinds the cluster refuses Slipway's identity, from READ_STATE's hash.

    Each maps to the namespaces it is refused in, or ``[]`` when it is refused
    across the cluster (a cluster-scoped kind such as nodes, or any kind when all
    namespaces are watched)."""
    out: dict[str, list[str]] = {}
    for field, value in state.items():
        if field.startswith("forbidden:") and value:
            kind = field.split(":", 1)[1]
            out[kind] = [] if value == "*" else value.split(",")
    return out


def is_stale(state: dict[str, str]) -> bool:
    """Return whether the pages should say the data may be out of date."""
    return not state or state.get("stale") == "1" or state.get("reachable") == "0"


def forget(cluster_id: int) -> None:
    """Delete everything kept for a cluster (it was removed)."""
    r = client()
    keys = list(r.scan_iter(match=f"{prefix(cluster_id)}:*", count=500))
    if keys:
        r.delete(*keys)
