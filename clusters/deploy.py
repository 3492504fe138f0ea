"""Apply manifests and wait for their rollout: the capability deploy jobs use.

``pipelines/`` calls these (a deploy job), never the reverse::

    applied = apply_manifests(cluster, "shop", docs, field_manager="slipway")
    result = wait_for_rollout(cluster, applied, timeout=300, progress=log.write)
    if not result.ok:
        fail(result.reason)

Both functions are synchronous and bounded: apply sends one server-side apply per
document; the wait follows a watch (resumed from resourceVersion, relisted on 410
Gone) and gives up at ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch as k8s_watch

from . import kube
from .models import Cluster

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AppliedObject:
    """One object after server-side apply, as the server stored it."""

    api_version: str
    kind: str
    namespace: str | None
    name: str
    generation: int = 0
    resource_version: str = ""

    @property
    def key(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@dataclass(frozen=True)
class RolloutResult:
    """Whether every applied workload finished rolling out, and if not, why."""

    ok: bool
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)


def apply_manifests(
    cluster: Cluster,
    namespace: str,
    documents: list[dict[str, Any]],
    *,
    field_manager: str = "slipway",
    force: bool = False,
    backend: kube.KubeBackend | None = None,
) -> list[AppliedObject]:
    """Server-side apply DOCUMENTS in order into NAMESPACE; raise KubeError on refusal.

    A document that names another namespace is refused (422) rather than silently
    deployed elsewhere. Conflicts with another field manager raise a 409 KubeError
    unless ``force`` is set.
    """
    own = backend is None
    b = backend or kube.connect(cluster)
    try:
        out = []
        for doc in documents:
            stored = b.apply(
                doc, namespace=namespace, field_manager=field_manager, force=force
            )
            meta = stored.get("metadata") or {}
            out.append(
                AppliedObject(
                    api_version=str(stored.get("apiVersion") or doc.get("apiVersion")),
                    kind=str(stored.get("kind") or doc.get("kind")),
                    namespace=meta.get("namespace"),
                    name=str(meta.get("name")),
                    generation=int(meta.get("generation") or 0),
                    resource_version=str(meta.get("resourceVersion") or ""),
                )
            )
        return out
    finally:
        if own:
            b.close()


def _condition(obj: dict, type_: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def rollout_state(obj: dict) -> tuple[bool | None, str]:
    """Return (done, message): True done, False failed for good, None still going.

    Follows kubectl rollout status: the controller must have observed the current
    generation, then every replica must be updated, ready and available.
    """
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return None, "waiting for the controller to observe the new spec"
    if kind == "Deployment":
        progressing = _condition(obj, "Progressing")
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return False, progressing.get("message") or "ProgressDeadlineExceeded"
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        updated = int(status.get("updatedReplicas") or 0)
        ready = int(status.get("readyReplicas") or 0)
        available = int(status.get("availableReplicas") or 0)
        total = int(status.get("replicas") or 0)
        if updated < want:
            return None, f"{updated} of {want} replicas updated"
        if total > updated:
            return None, f"{total - updated} old replicas pending termination"
        if ready < want or available < want:
            return None, f"{available} of {want} updated replicas available"
        if progressing and progressing.get("reason") != "NewReplicaSetAvailable":
            return None, f"progressing: {progressing.get('reason')}"
        return True, f"{want} of {want} replicas updated, ready and available"
    if kind == "StatefulSet":
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        ready = int(status.get("readyReplicas") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        available = int(status.get("availableReplicas", ready) or 0)
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if ready < want or available < want:
            return None, f"{ready} of {want} replicas ready"
        if strategy == "RollingUpdate":
            partition = int(
                ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get(
                    "partition"
                )
                or 0
            )
            if partition == 0 and (
                updated < want
                or status.get("currentRevision") != status.get("updateRevision")
            ):
                return None, f"{updated} of {want} replicas updated"
        return True, f"{want} of {want} replicas ready"
    if kind == "DaemonSet":
        want = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
        if updated < want:
            return None, f"{updated} of {want} pods updated"
        if available < want:
            return None, f"{available} of {want} updated pods available"
        return True, f"{want} of {want} pods updated and available"
    return True, "nothing to wait for"


WATCHED = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}


def wait_for_rollout(
    cluster: Cluster,
    applied: list[AppliedObject],
    *,
    timeout: float,
    progress: Progress = lambda _msg: None,
    backend: kube.KubeBackend | None = None,
) -> RolloutResult:
    """Wait until every Deployment/StatefulSet/DaemonSet in APPLIED has rolled out.

    Stops at the first failure (ProgressDeadlineExceeded) or at TIMEOUT seconds.
    Other kinds need no waiting. PROGRESS receives one line per state change.
    """
    deadline = time.monotonic() + timeout
    own = backend is None
    b = backend or kube.connect(cluster)
    details: dict[str, str] = {}
    try:
        for obj in applied:
            if obj.kind not in WATCHED:
                continue
            ok, message = _wait_one(b, obj, deadline, progress)
            details[obj.key] = message
            if not ok:
                return RolloutResult(False, f"{obj.key}: {message}", details)
        return RolloutResult(True, "rolled out", details)
    finally:
        if own:
            b.close()


def _wait_one(
    b: kube.KubeBackend, obj: AppliedObject, deadline: float, progress: Progress
) -> tuple[bool, str]:
    plural = WATCHED[obj.kind]
    list_fn = {
        "deployments": b.apps.list_namespaced_deployment,
        "statefulsets": b.apps.list_namespaced_stateful_set,
        "daemonsets": b.apps.list_namespaced_daemon_set,
    }[plural]
    selector = f"metadata.name={obj.name}"
    last = ""
    rv: str | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, f"timed out: {last or 'no status yet'}"
        if rv is None:
            # (Re)list: the current state and the resourceVersion to watch from.
            try:
                page = b.list_objects(
                    plural, obj.namespace, field_selector=selector, limit=1
                )
            except kube.KubeError as exc:
                if exc.status == 0:
                    time.sleep(min(1.0, max(remaining, 0)))
                    continue
                return False, str(exc)
            if not page.items:
                return False, "the object was deleted"
            done, message = rollout_state(page.items[0])
            if message != last:
                progress(f"{obj.key}: {message}")
                last = message
            if done is not None:
                return done, message
            rv = page.resource_version
        w = k8s_watch.Watch()
        seconds = max(1, min(int(remaining), 60))
        try:
            for event in w.stream(
                list_fn,
                obj.namespace,
                field_selector=selector,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                _request_timeout=(kube.CONNECT_TIMEOUT, seconds + 10),
                deserialize=False,
            ):
                type_ = event.get("type")
                raw = event.get("object") or {}
                new_rv = (raw.get("metadata") or {}).get("resourceVersion")
                if type_ == "ERROR":
                    rv = None  # 410 Gone (or worse): relist.
                    break
                if new_rv:
                    rv = new_rv
                if type_ == "BOOKMARK":
                    continue
                if type_ == "DELETED":
                    return False, "the object was deleted"
                done, message = rollout_state(raw)
                if message != last:
                    progress(f"{obj.key}: {message}")
                    last = message
                if done is not None:
                    w.stop()
                    return done, message
                if time.monotonic() >= deadline:
                    break
        except Exception as exc:  # noqa: BLE001 - dropped stream: resume from rv.
            status = getattr(exc, "status", None)
            if status == 410:
                rv = None
            elif status in (401, 403):
                return False, str(kube.KubeError.from_api_exception(exc))  # type: ignore[arg-type]
            else:
                time.sleep(0.2)
        finally:
            w.stop()
