"""In-memory object store with etcd-like revisions, history and compaction."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import managed
from .resources import (
    REGISTRY,
    ResourceType,
    admit,
    by_kind,
    default_object,
    lookup,
    order_object,
    random_suffix,
    validate,
)

Key = tuple[str, str]  # (group, plural)


def now_str(offset_seconds: float = 0) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class ApiError(Exception):
    """An error the API server reports as a v1 Status."""

    _REASONS = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        406: "NotAcceptable",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
    }

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict | None = None,
        metadata: dict | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self._REASONS.get(code, "Unknown")
        self.details = details
        self.metadata = metadata or {}

    def status(self) -> dict:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details = {"name": name, "group": rt.group, "kind": rt.plural}
    return ApiError(404, f'{rt.qualified} "{name}" not found', "NotFound", details)


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details = {"name": name, "group": rt.group, "kind": rt.plural}
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        "Conflict",
        details,
    )


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(
    rt: ResourceType, name: str, causes: list[tuple[str, str, str]]
) -> ApiError:
    msgs = [f"{f}: {m}" for (_, f, m) in causes]
    gk = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    message = f'{gk} "{name}" is invalid: '
    message += msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = [
        {"reason": r, "message": m, "field": f} for (r, f, m) in causes
    ]
    return ApiError(422, message, "Invalid", details)


@dataclass
class Event:
    type: str
    key: Key
    obj: dict
    old: dict | None
    rv: int
    _line: bytes | None = field(default=None, repr=False)

    @property
    def namespace(self) -> str:
        return self.obj.get("metadata", {}).get("namespace", "")

    def line(self) -> bytes:
        if self._line is None:
            self._line = (
                compact_json({"type": self.type, "object": self.obj}) + "\n"
            ).encode()
        return self._line


def resolve(resource: Any) -> ResourceType:
    """'pods', 'deployments.apps', 'Deployment', ('apps','deployments') or a ResourceType."""
    if isinstance(resource, ResourceType):
        return resource
    if isinstance(resource, tuple):
        group, plural = resource
        for rt in REGISTRY.values():
            if rt.group == group and rt.plural == plural:
                return rt
        raise KeyError(resource)
    if isinstance(resource, str):
        plural, _, group = resource.partition(".")
        candidates = [
            rt
            for rt in REGISTRY.values()
            if (rt.plural == plural and (not group or rt.group == group))
            or rt.kind == resource
        ]
        if candidates:
            core = [c for c in candidates if c.group == ""]
            return (core or candidates)[0]
    raise KeyError(resource)


def _rt_for_obj(obj: dict) -> ResourceType:
    rt = by_kind(obj.get("kind", ""), obj.get("apiVersion"))
    if rt is None:
        rt = by_kind(obj.get("kind", ""))
    if rt is None:
        raise KeyError(f"unknown kind {obj.get('kind')!r} {obj.get('apiVersion')!r}")
    return rt


def _spec_part(obj: dict) -> dict:
    return {
        k: v
        for k, v in obj.items()
        if k not in ("metadata", "status", "kind", "apiVersion")
    }


class Store:
    """Thread-safe object store. All public methods take/return plain dicts (copies)."""

    def __init__(self, history_limit: int = 500_000, seed: int | None = None):
        self._lock = threading.RLock()
        self._rv = 0
        self._objects: dict[Key, dict[tuple[str, str], dict]] = {}
        self._history: list[Event] = []
        self._compacted = 0
        self.history_limit = history_limit
        self._listeners: list[Callable[[Event], None]] = []
        self._ser: dict[int, tuple[dict, str]] = {}
        self.rng = random.Random(seed)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )

    # ----------------------------------------------------------------- basics
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    def set_resource_version(self, rv: int) -> None:
        """Jump the global revision forward (as if other writes happened)."""
        with self._lock:
            if rv < self._rv:
                raise ValueError("resourceVersion can only move forward")
            self._rv = rv

    def item_json(self, obj: dict) -> str:
        """Compact JSON of a stored object without kind/apiVersion (list item form),
        cached: stored objects are immutable (every write stores a new dict)."""
        hit = self._ser.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        text = compact_json(
            {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        )
        if len(self._ser) > 200_000:
            self._ser.clear()
        self._ser[id(obj)] = (obj, text)
        return text

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _bucket(self, key: Key) -> dict:
        return self._objects.setdefault(key, {})

    def _emit(self, type_: str, rt: ResourceType, obj: dict, old: dict | None) -> Event:
        ev = Event(type_, rt.key, obj, old, int(obj["metadata"]["resourceVersion"]))
        self._history.append(ev)
        if len(self._history) > self.history_limit:
            drop = len(self._history) - self.history_limit
            self._compacted = self._history[drop - 1].rv
            del self._history[:drop]
        for fn in list(self._listeners):
            fn(ev)
        return ev

    def compact(self, rv: int | None = None) -> int:
        """Forget history up to ``rv`` (default: everything). Older RVs then get 410."""
        with self._lock:
            rv = self._rv if rv is None else rv
            self._compacted = max(self._compacted, rv)
            self._history = [e for e in self._history if e.rv > self._compacted]
            return self._compacted

    # ----------------------------------------------------------------- reads
    def get_raw(self, rt: ResourceType, namespace: str, name: str) -> dict | None:
        return self._objects.get(rt.key, {}).get(
            (namespace if rt.namespaced else "", name)
        )

    def get(
        self, resource: Any, namespace: str | None, name: str | None = None
    ) -> dict | None:
        """get('pods', 'demo', 'web-1') or get('nodes', 'node-1') for cluster scope."""
        rt = resolve(resource)
        if name is None:
            namespace, name = "", namespace
        with self._lock:
            obj = self.get_raw(rt, namespace or "", name or "")
            return copy.deepcopy(obj) if obj is not None else None

    def list_raw(self, rt: ResourceType, namespace: str | None = None) -> list[dict]:
        bucket = self._objects.get(rt.key, {})
        if namespace:
            return [o for (ns, _), o in bucket.items() if ns == namespace]
        return list(bucket.values())

    def list(
        self,
        resource: Any,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict]:
        from .selectors import parse_label_selector

        rt = resolve(resource)
        match = parse_label_selector(label_selector)
        with self._lock:
            items = [
                copy.deepcopy(o)
                for o in self.list_raw(rt, namespace)
                if match(o.get("metadata", {}).get("labels") or {})
            ]
        items.sort(
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )
        return items

    def history_since(self, rv: int) -> list[Event]:
        """Events with revision > rv (caller holds the lock)."""
        lo, hi = 0, len(self._history)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._history[mid].rv <= rv:
                lo = mid + 1
            else:
                hi = mid
        return self._history[lo:]

    def snapshot_at(self, rt: ResourceType, rv: int) -> list[dict]:
        """Objects of one resource as they were at revision ``rv`` (caller holds lock)."""
        state = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in self.list_raw(rt)
        }
        for ev in reversed(self.history_since(rv)):
            if ev.key != rt.key:
                continue
            k = (ev.obj["metadata"].get("namespace", ""), ev.obj["metadata"]["name"])
            if ev.type == "ADDED":
                state.pop(k, None)
            else:
                state[k] = ev.old
        return [o for o in state.values() if o is not None]

    # ----------------------------------------------------------------- writes
    def restore(self, obj: dict) -> dict:
        """Insert an object exactly as given (uid, resourceVersion, timestamps kept).

        Used to reproduce recorded clusters; the global revision moves to at least the
        object's resourceVersion. Emits ADDED.
        """
        rt = _rt_for_obj(obj)
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", rt.kind)
        obj.setdefault("apiVersion", rt.api_version)
        with self._lock:
            rv = int(obj["metadata"].get("resourceVersion") or self._next_rv())
            self._rv = max(self._rv, rv)
            obj["metadata"]["resourceVersion"] = str(rv)
            obj = order_object(obj)
            ns = obj["metadata"].get("namespace", "") if rt.namespaced else ""
            old = self._bucket(rt.key).get((ns, obj["metadata"]["name"]))
            self._bucket(rt.key)[(ns, obj["metadata"]["name"])] = obj
            self._emit("MODIFIED" if old else "ADDED", rt, obj, old)
            return copy.deepcopy(obj)

    def create(
        self,
        obj: dict,
        *,
        namespace: str | None = None,
        manager: str = "unknown",
        rt: ResourceType | None = None,
        validate_obj: bool = True,
        record: bool = True,
        dry_run: bool = False,
        emit: bool = True,
        managed_fields: list | None = None,
    ) -> dict:
        rt = rt or _rt_for_obj(obj)
        obj = copy.deepcopy(obj)
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(20):
                    cand = meta["generateName"] + random_suffix(5, self.rng)
                    if self.get_raw(rt, meta.get("namespace", ""), cand) is None:
                        meta["name"] = cand
                        break
            if validate_obj:
                causes = validate(rt, obj)
                if causes:
                    raise invalid(rt, meta.get("name", ""), causes)
            ns = meta.get("namespace", "")
            if self.get_raw(rt, ns, meta["name"]) is not None:
                details = {"name": meta["name"], "kind": rt.plural}
                if rt.group:
                    details = {
                        "name": meta["name"],
                        "group": rt.group,
                        "kind": rt.plural,
                    }
                raise ApiError(
                    409,
                    f'{rt.qualified} "{meta["name"]}" already exists',
                    "AlreadyExists",
                    details,
                )
            for k in (
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
                "selfLink",
            ):
                meta.pop(k, None)
            meta["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            if rt.has_generation:
                meta["generation"] = 1
            meta["creationTimestamp"] = now_str()
            default_object(rt, obj, self.rng)
            if record:
                managed.record_update(
                    None, obj, manager, rt.api_version, meta["creationTimestamp"]
                )
            if managed_fields is not None:
                meta["managedFields"] = managed_fields
            admit(rt, obj, self.rng)
            if dry_run:
                return order_object(obj)
            meta["resourceVersion"] = str(self._next_rv())
            obj = order_object(obj)
            self._bucket(rt.key)[(ns, meta["name"])] = obj
            if emit:
                self._emit("ADDED", rt, obj, None)
            return copy.deepcopy(obj)

    def replace(
        self,
        obj: dict,
        *,
        subresource: str | None = None,
        manager: str = "unknown",
        rt: ResourceType | None = None,
        check_rv: bool = True,
        operation: str = "Update",
        prepared: bool = False,
        dry_run: bool = False,
        bump_generation: bool = True,
    ) -> dict:
        """PUT semantics. ``obj`` may omit resourceVersion (unconditional update)."""
        rt = rt or _rt_for_obj(obj)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace", "") if rt.namespaced else ""
        name = meta.get("name", "")
        with self._lock:
            old = self.get_raw(rt, ns, name)
            if old is None:
                raise not_found(rt, name)
            given_rv = meta.get("resourceVersion")
            if check_rv and given_rv and given_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name, STALE)
            new = obj
            new["kind"] = rt.kind
            new["apiVersion"] = rt.api_version
            omd = old["metadata"]
            if subresource == "status":
                # Only status changes through the status subresource.
                new = {**copy.deepcopy(old), "status": copy.deepcopy(obj.get("status"))}
                if "status" not in obj:
                    new.pop("status", None)
            else:
                if rt.has_status and subresource is None:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                # Immutable / system metadata
                for k in (
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "namespace",
                    "name",
                ):
                    if k in omd:
                        meta[k] = omd[k]
                    else:
                        meta.pop(k, None)
                if not prepared:
                    default_object(rt, new, self.rng)
                    if "status" in old and rt.has_status:
                        new["status"] = copy.deepcopy(old["status"])
                causes = validate(rt, new)
                if causes:
                    raise invalid(rt, name, causes)
                if (
                    bump_generation
                    and rt.has_generation
                    and _spec_part(new) != _spec_part(old)
                ):
                    meta["generation"] = int(omd.get("generation", 1)) + 1
            if operation != "Apply":
                new["metadata"]["managedFields"] = copy.deepcopy(
                    omd.get("managedFields", [])
                )
            new["metadata"]["resourceVersion"] = omd["resourceVersion"]
            if _same(new, old) and (
                operation != "Apply"
                or _mf_key(new["metadata"].get("managedFields"))
                == _mf_key(omd.get("managedFields"))
            ):
                return copy.deepcopy(old)
            if operation != "Apply":
                managed.record_update(
                    old, new, manager, rt.api_version, now_str(), subresource
                )
            if dry_run:
                return order_object(new)
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            new = order_object(new)
            # a terminating object whose last finalizer went away disappears now
            if (
                new["metadata"].get("deletionTimestamp")
                and not new["metadata"].get("finalizers")
                and (
                    rt.kind != "Pod"
                    or new["metadata"].get("deletionGracePeriodSeconds") == 0
                )
            ):
                del self._bucket(rt.key)[(ns, name)]
                self._emit("DELETED", rt, new, old)
                return copy.deepcopy(new)
            self._bucket(rt.key)[(ns, name)] = new
            self._emit("MODIFIED", rt, new, old)
            return copy.deepcopy(new)

    # convenient aliases for tests
    def update(self, obj: dict, **kw) -> dict:
        return self.replace(obj, **kw)

    def patch_status(
        self,
        resource: Any,
        namespace: str | None,
        name: str,
        status: dict,
        manager: str = "fakekube-test",
    ) -> dict:
        """Merge ``status`` into the object's status (like a status-subresource merge patch)."""
        from .patch import json_merge_patch

        rt = resolve(resource)
        with self._lock:
            cur = self.get_raw(rt, namespace or "", name)
            if cur is None:
                raise not_found(rt, name)
            new = copy.deepcopy(cur)
            new["status"] = json_merge_patch(cur.get("status") or {}, status)
            new["metadata"].pop("resourceVersion", None)
            return self.replace(new, subresource="status", rt=rt, manager=manager)

    def mutate(
        self,
        resource: Any,
        namespace: str | None,
        name: str,
        fn: Callable[[dict], Any],
        manager: str = "fakekube-test",
        subresource: str | None = None,
        bump_generation: bool = True,
    ) -> dict:
        """Read-modify-write under the lock: ``fn`` edits a copy in place."""
        rt = resolve(resource)
        with self._lock:
            cur = self.get_raw(rt, namespace or "", name)
            if cur is None:
                raise not_found(rt, name)
            new = copy.deepcopy(cur)
            fn(new)
            return self.replace(
                new,
                rt=rt,
                manager=manager,
                subresource=subresource,
                check_rv=False,
                prepared=True,
                bump_generation=bump_generation,
            )

    def delete(
        self,
        resource: Any,
        namespace: str | None,
        name: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: dict | None = None,
        dry_run: bool = False,
    ) -> tuple[dict, bool]:
        """Delete. Returns (object, gone_now). Pods on nodes are deleted gracefully
        (MODIFIED with deletionTimestamp first); finalizers keep objects around."""
        rt = resolve(resource)
        if name is None:
            namespace, name = "", namespace
        ns = namespace or "" if rt.namespaced else ""
        with self._lock:
            cur = self.get_raw(rt, ns, name)
            if cur is None:
                raise not_found(rt, name)
            if preconditions:
                if (
                    preconditions.get("uid")
                    and preconditions["uid"] != cur["metadata"]["uid"]
                ):
                    raise conflict(
                        rt,
                        name,
                        f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                        f"UID in object meta: {cur['metadata']['uid']}",
                    )
                prv = preconditions.get("resourceVersion")
                if prv and prv != cur["metadata"]["resourceVersion"]:
                    raise conflict(
                        rt,
                        name,
                        f"Precondition failed: ResourceVersion in precondition: {prv}, "
                        f"ResourceVersion in object meta: {cur['metadata']['resourceVersion']}",
                    )
            if dry_run:
                return copy.deepcopy(cur), False
            meta = cur["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if (
                propagation_policy == "Foreground"
                and "foregroundDeletion" not in finalizers
            ):
                finalizers.append("foregroundDeletion")
            elif propagation_policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            grace = grace_period_seconds
            if rt.kind == "Pod":
                spec = cur.get("spec") or {}
                if grace is None:
                    grace = spec.get("terminationGracePeriodSeconds", 30)
                phase = (cur.get("status") or {}).get("phase")
                if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                    grace = 0
            else:
                grace = 0
            if rt.kind == "Namespace":
                return self._delete_namespace(rt, cur), True
            pending = (
                bool(finalizers)
                or grace > 0
                or (rt.kind == "Pod" and bool(meta.get("deletionTimestamp")))
            )
            if meta.get("deletionTimestamp") and grace > 0:
                # already terminating: only a shorter grace period changes anything
                if grace >= int(meta.get("deletionGracePeriodSeconds") or 0):
                    return copy.deepcopy(cur), False
            if pending:
                new = copy.deepcopy(cur)
                nm = new["metadata"]
                if not nm.get("deletionTimestamp") or grace < int(
                    nm.get("deletionGracePeriodSeconds") or 0
                ):
                    nm["deletionTimestamp"] = now_str(grace)
                    nm["deletionGracePeriodSeconds"] = grace
                    if rt.has_generation and not meta.get("deletionTimestamp"):
                        nm["generation"] = int(nm.get("generation", 0)) + 1
                if finalizers:
                    nm["finalizers"] = finalizers
                if new == cur:
                    return copy.deepcopy(cur), False
                nm["resourceVersion"] = str(self._next_rv())
                new = order_object(new)
                if rt.kind == "Pod" and grace == 0 and not finalizers:
                    del self._bucket(rt.key)[(ns, name)]
                    self._emit("MODIFIED", rt, new, cur)
                    gone = copy.deepcopy(new)
                    gone["metadata"]["resourceVersion"] = str(self._next_rv())
                    self._emit("DELETED", rt, gone, new)
                    return copy.deepcopy(gone), True
                self._bucket(rt.key)[(ns, name)] = new
                self._emit("MODIFIED", rt, new, cur)
                return copy.deepcopy(new), False
            return self._remove(rt, cur), True

    def _remove(self, rt: ResourceType, cur: dict) -> dict:
        meta = cur["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        del self._bucket(rt.key)[(ns, meta["name"])]
        gone = copy.deepcopy(cur)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", rt, gone, cur)
        return copy.deepcopy(gone)

    def _delete_namespace(self, rt: ResourceType, cur: dict) -> dict:
        name = cur["metadata"]["name"]
        term = copy.deepcopy(cur)
        term["metadata"]["deletionTimestamp"] = now_str()
        term["status"] = {"phase": "Terminating"}
        term["metadata"]["resourceVersion"] = str(self._next_rv())
        self._bucket(rt.key)[("", name)] = term
        self._emit("MODIFIED", rt, term, cur)
        for other in REGISTRY.values():
            if not other.namespaced:
                continue
            for obj in list(self._objects.get(other.key, {}).values()):
                if obj["metadata"].get("namespace") == name:
                    self._remove(other, obj)
        self._remove(rt, term)
        return copy.deepcopy(term)

    def force_delete(
        self, resource: Any, namespace: str | None, name: str
    ) -> dict | None:
        """Remove immediately, ignoring grace periods and finalizers (MODIFIED+DELETED for pods
        that were terminating, like a kubelet's final delete)."""
        rt = resolve(resource)
        with self._lock:
            cur = self.get_raw(rt, namespace or "", name)
            if cur is None:
                return None
            if rt.kind == "Pod" and cur["metadata"].get("deletionTimestamp"):
                obj, _ = self.delete(rt, namespace, name, grace_period_seconds=0)
                return obj
            return self._remove(rt, cur)

    def remove_finalizer(
        self, resource: Any, namespace: str | None, name: str, finalizer: str
    ) -> None:
        def fn(o):
            o["metadata"]["finalizers"] = [
                f for f in o["metadata"].get("finalizers") or [] if f != finalizer
            ]
            if not o["metadata"]["finalizers"]:
                del o["metadata"]["finalizers"]

        self.mutate(resource, namespace, name, fn, manager="kube-controller-manager")

    # ----------------------------------------------------------------- bulk
    def bulk_load(self, objs: list[dict]) -> None:
        """Fast insert without watch events (history is compacted to the new revision)."""
        with self._lock:
            for obj in objs:
                rt = _rt_for_obj(obj)
                self.create(obj, rt=rt, validate_obj=False, record=False, emit=False)
            self.compact()


def _mf_key(entries) -> list:
    return [{k: v for k, v in e.items() if k != "time"} for e in entries or []]


def _same(a: dict, b: dict) -> bool:
    def strip(o):
        o = dict(o)
        m = dict(o.get("metadata") or {})
        m.pop("managedFields", None)
        m.pop("resourceVersion", None)
        o["metadata"] = m
        return o

    return strip(a) == strip(b)


__all__ = ["ApiError", "Event", "Store", "lookup", "resolve", "now_str", "compact_json"]
