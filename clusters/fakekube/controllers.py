"""Simulated control plane: deployment/replicaset/statefulset/daemonset controllers, a
scheduler, a "fakelet" that marks pods Running/Ready and finalizes terminating pods, the
garbage collector, and PDB/HPA status. Plus bulk ``populate`` and ``churn`` helpers.

Everything works on the Store directly (as in-process controllers would), so their writes
produce the same watch events an API client would see.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
import queue
import random
import threading
import time
import uuid
from typing import Any

from .resources import label_selector_string, match_label_selector_obj, template_hash
from .store import ApiError, Event, Store, now_str, resolve

KCM = "kube-controller-manager"


def _owner_ref(obj: dict, kind: str, api_version: str) -> dict:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owner_uid(obj: dict, kind: str | None = None) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and (kind is None or ref.get("kind") == kind):
            return ref.get("uid")
    return None


def _owner_name(obj: dict, kind: str) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return ref.get("name")
    return None


def pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _resolve_int_or_percent(v: Any, total: int, round_up: bool) -> int:
    if isinstance(v, str) and v.endswith("%"):
        x = total * int(v[:-1]) / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(v or 0)


def bind_pod(store: Store, namespace: str, name: str, node: str | None) -> dict:
    rt = resolve("pods")
    with store.lock:
        pod = store.get_raw(rt, namespace, name)
        if pod is None:
            raise ApiError(
                404,
                f'pods "{name}" not found',
                "NotFound",
                {"name": name, "kind": "pods"},
            )
        if (pod.get("spec") or {}).get("nodeName"):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on pods/binding "{name}": pod '
                f"{name} is already assigned to node "
                f'"{pod["spec"]["nodeName"]}"',
                "Conflict",
                {"name": name, "kind": "pods/binding"},
            )
        node_obj = store.get_raw(resolve("nodes"), "", node or "")
        zone = ((node_obj or {}).get("metadata", {}).get("labels") or {}).get(
            "topology.kubernetes.io/zone"
        )

        def fn(p):
            p["spec"]["nodeName"] = node
            if zone:
                p["metadata"].setdefault("labels", {})[
                    "topology.kubernetes.io/zone"
                ] = zone
            st = p.setdefault("status", {})
            conds = [
                c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"
            ]
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now_str(),
                }
            )
            st["conditions"] = conds
            p["status"] = {
                k: st[k] for k in ("phase", "conditions", "qosClass") if k in st
            } | st

        return store.mutate(
            rt,
            namespace,
            name,
            fn,
            manager="kube-scheduler",
            subresource="binding",
            bump_generation=False,
        )


class Controllers:
    """Background thread running the simulated control plane.

    Options (all delays in seconds):
      schedule_delay, ready_delay, terminate_delay: scheduler / fakelet latencies
      deadline_factor: multiplies progressDeadlineSeconds (0.01 turns 600 s into 6 s)
      bad_image_marker: images containing it never become ready (ErrImagePull)
    """

    def __init__(
        self,
        store: Store,
        *,
        schedule_delay: float = 0.01,
        ready_delay: float = 0.05,
        terminate_delay: float = 0.03,
        deadline_factor: float = 1.0,
        bad_image_marker: str = "bad",
        seed: int | None = None,
    ):
        self.store = store
        self.schedule_delay = schedule_delay
        self.ready_delay = ready_delay
        self.terminate_delay = terminate_delay
        self.deadline_factor = deadline_factor
        self.bad_image_marker = bad_image_marker
        self.rng = random.Random(seed)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._timers: list[tuple[float, int, str, tuple]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: dict[str, tuple[tuple, float]] = {}
        self._ip = itertools.count(10)

    def configure(self, **options) -> None:
        for k, v in options.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown controller option {k}")
            setattr(self, k, v)

    def start(self) -> None:
        self.store.add_listener(self._on_event)
        self._thread = threading.Thread(
            target=self._run, name="fakekube-controllers", daemon=True
        )
        self._thread.start()
        # pick up whatever already exists
        self._q.put(("resync",))

    def stop(self) -> None:
        self._stop.set()
        self.store.remove_listener(self._on_event)
        self._q.put(("stop",))
        if self._thread is not None:
            self._thread.join(5)

    def _on_event(self, ev: Event) -> None:
        self._q.put(("event", ev))

    def _timer(self, delay: float, kind: str, key: tuple) -> None:
        heapq.heappush(
            self._timers, (time.monotonic() + delay, next(self._seq), kind, key)
        )

    # ------------------------------------------------------------------ main loop
    def _run(self) -> None:
        while not self._stop.is_set():
            wait = 0.05
            if self._timers:
                wait = max(0.0, min(wait, self._timers[0][0] - time.monotonic()))
            dirty: dict[str, set] = {
                "deployments": set(),
                "replicasets": set(),
                "statefulsets": set(),
                "daemonsets": set(),
                "pdbns": set(),
                "hpa": set(),
            }
            try:
                item = self._q.get(timeout=wait)
                items = [item]
                while True:
                    try:
                        items.append(self._q.get_nowait())
                    except queue.Empty:
                        break
            except queue.Empty:
                items = []
            for item in items:
                if item[0] == "stop":
                    return
                if item[0] == "resync":
                    self._resync(dirty)
                else:
                    self._handle(item[1], dirty)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, kind, key = heapq.heappop(self._timers)
                try:
                    self._fire(kind, key, dirty)
                except ApiError:
                    pass
            try:
                self._reconcile(dirty)
            except ApiError:
                pass
            except Exception:  # noqa: BLE001
                import traceback

                traceback.print_exc()

    def _resync(self, dirty) -> None:
        s = self.store
        with s.lock:
            for d in s.list_raw(resolve("deployments.apps")):
                dirty["deployments"].add(
                    (d["metadata"]["namespace"], d["metadata"]["name"])
                )
            for r in s.list_raw(resolve("replicasets.apps")):
                dirty["replicasets"].add(
                    (r["metadata"]["namespace"], r["metadata"]["name"])
                )
            for r in s.list_raw(resolve("statefulsets.apps")):
                dirty["statefulsets"].add(
                    (r["metadata"]["namespace"], r["metadata"]["name"])
                )
            for r in s.list_raw(resolve("daemonsets.apps")):
                dirty["daemonsets"].add(
                    (r["metadata"]["namespace"], r["metadata"]["name"])
                )
            for p in s.list_raw(resolve("pods")):
                self._pod_timers(p)
            for h in s.list_raw(resolve(("autoscaling", "horizontalpodautoscalers"))):
                dirty["hpa"].add((h["metadata"]["namespace"], h["metadata"]["name"]))
            for p in s.list_raw(resolve(("policy", "poddisruptionbudgets"))):
                dirty["pdbns"].add(p["metadata"]["namespace"])

    def _handle(self, ev: Event, dirty) -> None:
        group, plural = ev.key
        obj = ev.obj
        ns = obj["metadata"].get("namespace", "")
        name = obj["metadata"]["name"]
        if plural == "deployments":
            dirty["deployments"].add((ns, name))
            if ev.type == "DELETED":
                self._gc_children("replicasets.apps", ns, obj["metadata"]["uid"])
        elif plural == "replicasets":
            dirty["replicasets"].add((ns, name))
            dep = _owner_name(obj, "Deployment")
            if dep:
                dirty["deployments"].add((ns, dep))
            if ev.type == "DELETED":
                self._gc_children("pods", ns, obj["metadata"]["uid"])
        elif plural in ("statefulsets", "daemonsets"):
            dirty[plural].add((ns, name))
            if ev.type == "DELETED":
                self._gc_children("pods", ns, obj["metadata"]["uid"])
        elif plural == "pods":
            rs = _owner_name(obj, "ReplicaSet")
            if rs:
                dirty["replicasets"].add((ns, rs))
                with self.store.lock:
                    rso = self.store.get_raw(resolve("replicasets.apps"), ns, rs)
                if rso is not None:
                    dep = _owner_name(rso, "Deployment")
                    if dep:
                        dirty["deployments"].add((ns, dep))
            for kind, key in (
                ("StatefulSet", "statefulsets"),
                ("DaemonSet", "daemonsets"),
            ):
                owner = _owner_name(obj, kind)
                if owner:
                    dirty[key].add((ns, owner))
            dirty["pdbns"].add(ns)
            if ev.type != "DELETED":
                self._pod_timers(obj)
        elif plural == "poddisruptionbudgets" and ev.type != "DELETED":
            dirty["pdbns"].add(ns)
        elif plural == "horizontalpodautoscalers" and ev.type != "DELETED":
            dirty["hpa"].add((ns, name))
        elif plural == "nodes":
            for d in self.store.list_raw(resolve("daemonsets.apps")):
                dirty["daemonsets"].add(
                    (d["metadata"]["namespace"], d["metadata"]["name"])
                )

    def _pod_timers(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"], meta["uid"])
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp"):
            if not meta.get("finalizers"):
                self._timer(self.terminate_delay, "finalize", key)
        elif not spec.get("nodeName"):
            self._timer(self.schedule_delay, "schedule", key)
        elif phase == "Pending":
            self._timer(self.ready_delay, "start", key)

    def _gc_children(self, resource: str, ns: str, owner_uid: str) -> None:
        rt = resolve(resource)
        s = self.store
        with s.lock:
            victims = [o for o in s.list_raw(rt, ns) if _owner_uid(o) == owner_uid]
            for o in victims:
                try:
                    s.delete(rt, ns, o["metadata"]["name"])
                except ApiError:
                    pass

    # ------------------------------------------------------------------ timers
    def _fire(self, kind: str, key: tuple, dirty) -> None:
        ns, name, uid = key
        if kind == "deadline":
            dirty["deployments"].add((ns, name))
            return
        s = self.store
        rt = resolve("pods")
        with s.lock:
            pod = s.get_raw(rt, ns, name)
            if pod is None or pod["metadata"]["uid"] != uid:
                return
            if kind == "finalize":
                if pod["metadata"].get("deletionTimestamp"):
                    s.delete(rt, ns, name, grace_period_seconds=0)
            elif kind == "schedule":
                if not pod["spec"].get("nodeName") and not pod["metadata"].get(
                    "deletionTimestamp"
                ):
                    node = self._pick_node()
                    if node is None:
                        self._timer(0.5, "schedule", key)
                        return
                    bind_pod(s, ns, name, node)
            elif kind == "start":
                if pod["metadata"].get("deletionTimestamp"):
                    return
                if (pod.get("status") or {}).get("phase") != "Pending":
                    return
                self._start_pod(pod)

    def _pick_node(self) -> str | None:
        s = self.store
        nodes = [
            n
            for n in s.list_raw(resolve("nodes"))
            if not (n.get("spec") or {}).get("unschedulable")
        ]
        if not nodes:
            return None
        counts: dict[str, int] = {n["metadata"]["name"]: 0 for n in nodes}
        for p in s.list_raw(resolve("pods")):
            nn = (p.get("spec") or {}).get("nodeName")
            if nn in counts:
                counts[nn] += 1
        return min(sorted(counts), key=lambda n: counts[n])

    def _start_pod(self, pod: dict) -> None:
        s = self.store
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        node = s.get_raw(resolve("nodes"), "", pod["spec"]["nodeName"]) or {}
        host_ip = next(
            (
                a["address"]
                for a in (node.get("status") or {}).get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            "10.0.0.1",
        )
        n = next(self._ip)
        pod_ip = f"10.244.{(n // 250) % 250}.{n % 250 + 1}"
        now = now_str()
        containers = pod["spec"].get("containers") or []
        bad = any(
            self.bad_image_marker and self.bad_image_marker in (c.get("image") or "")
            for c in containers
        )
        st = copy.deepcopy(pod.get("status") or {})
        sched = next(
            (c for c in st.get("conditions") or [] if c["type"] == "PodScheduled"),
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
        )
        ready = "False" if bad else "True"
        st["conditions"] = [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            {
                "type": "Initialized",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            {
                "type": "ContainersReady",
                "status": ready,
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            {
                "type": "Ready",
                "status": ready,
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            sched,
        ]
        if bad:
            for c in st["conditions"]:
                if c["type"] in ("ContainersReady", "Ready"):
                    c["reason"] = "ContainersNotReady"
                    c["message"] = (
                        "containers with unready status: ["
                        + " ".join(x["name"] for x in containers)
                        + "]"
                    )
        st["hostIP"] = host_ip
        st["hostIPs"] = [{"ip": host_ip}]
        st["podIP"] = pod_ip
        st["podIPs"] = [{"ip": pod_ip}]
        st["startTime"] = now
        cstat = []
        for c in containers:
            entry: dict[str, Any] = {"name": c["name"]}
            if bad:
                entry["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{c.get("image")}"',
                    }
                }
                entry.update(
                    {
                        "lastState": {},
                        "ready": False,
                        "restartCount": 0,
                        "image": c.get("image"),
                        "imageID": "",
                        "started": False,
                    }
                )
            else:
                entry["state"] = {"running": {"startedAt": now}}
                entry.update(
                    {
                        "lastState": {},
                        "ready": True,
                        "restartCount": 0,
                        "image": c.get("image"),
                        "imageID": f"fake://{c.get('image')}",
                        "containerID": f"fake://{c['name']}",
                        "started": True,
                    }
                )
            cstat.append(entry)
        st["containerStatuses"] = cstat
        st["phase"] = "Pending" if bad else "Running"
        qos = st.pop("qosClass", None)
        if qos:
            st["qosClass"] = qos
        new = copy.deepcopy(pod)
        new["status"] = st
        new["metadata"].pop("resourceVersion", None)
        s.replace(new, subresource="status", manager="kubelet", rt=resolve("pods"))
        _ = ns, name

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, dirty) -> None:
        for ns, name in sorted(dirty["deployments"]):
            self._reconcile_deployment(ns, name)
        for ns, name in sorted(dirty["replicasets"]):
            self._reconcile_rs(ns, name)
        for ns, name in sorted(dirty["statefulsets"]):
            self._reconcile_sts(ns, name)
        for ns, name in sorted(dirty["daemonsets"]):
            self._reconcile_ds(ns, name)
        for ns in sorted(dirty["pdbns"]):
            self._reconcile_pdbs(ns)
        for ns, name in sorted(dirty["hpa"]):
            self._reconcile_hpa(ns, name)

    def _owned(self, resource: str, ns: str, uid: str) -> list[dict]:
        return [
            o
            for o in self.store.list_raw(resolve(resource), ns)
            if _owner_uid(o) == uid
        ]

    def _finish_foreground(self, rt_name: str, obj: dict, child: str) -> bool:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            return False
        ns = meta["namespace"]
        kids = self._owned(child, ns, meta["uid"])
        for k in kids:
            if not k["metadata"].get("deletionTimestamp"):
                self.store.delete(
                    resolve(child),
                    ns,
                    k["metadata"]["name"],
                    propagation_policy="Foreground" if child != "pods" else None,
                )
        if not self._owned(child, ns, meta["uid"]) and "foregroundDeletion" in (
            meta.get("finalizers") or []
        ):
            self.store.remove_finalizer(rt_name, ns, meta["name"], "foregroundDeletion")
        return True

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        s = self.store
        drt = resolve("deployments.apps")
        rsrt = resolve("replicasets.apps")
        with s.lock:
            dep = s.get_raw(drt, ns, name)
            if dep is None:
                return
            if self._finish_foreground("deployments.apps", dep, "replicasets.apps"):
                return
            spec = dep["spec"]
            replicas = int(spec.get("replicas", 1))
            tmpl = spec["template"]
            phash = template_hash(tmpl)
            rss = [
                r
                for r in self._owned("replicasets.apps", ns, dep["metadata"]["uid"])
                if not r["metadata"].get("deletionTimestamp")
            ]
            new_rs = next(
                (
                    r
                    for r in rss
                    if r["metadata"].get("labels", {}).get("pod-template-hash") == phash
                ),
                None,
            )
            olds = [r for r in rss if r is not new_rs]
            ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
            recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
            surge = (
                0
                if recreate
                else _resolve_int_or_percent(ru.get("maxSurge", "25%"), replicas, True)
            )
            unavail = (
                replicas
                if recreate
                else _resolve_int_or_percent(
                    ru.get("maxUnavailable", "25%"), replicas, False
                )
            )
            if surge == 0 and unavail == 0:
                unavail = 1
            revs = [
                int(
                    r["metadata"]
                    .get("annotations", {})
                    .get("deployment.kubernetes.io/revision", "0")
                )
                for r in rss
            ]
            created = False
            dep_rev = (
                dep["metadata"]
                .get("annotations", {})
                .get("deployment.kubernetes.io/revision")
            )
            old_total = sum(int(r["spec"].get("replicas", 0)) for r in olds)
            if new_rs is None:
                rev = max(revs, default=0) + 1
                if not olds or recreate and old_total == 0:
                    initial = replicas
                elif recreate:
                    initial = 0
                else:
                    initial = max(0, min(replicas, replicas + surge - old_total))
                labels = dict(tmpl.get("metadata", {}).get("labels") or {})
                labels["pod-template-hash"] = phash
                rs_tmpl = copy.deepcopy(tmpl)
                rs_tmpl.setdefault("metadata", {})["labels"] = labels
                sel = copy.deepcopy(spec.get("selector") or {})
                sel.setdefault("matchLabels", {})["pod-template-hash"] = phash
                ann = {
                    "deployment.kubernetes.io/desired-replicas": str(replicas),
                    "deployment.kubernetes.io/max-replicas": str(replicas + surge),
                    "deployment.kubernetes.io/revision": str(rev),
                }
                new_rs = s.create(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": f"{name}-{phash}",
                            "namespace": ns,
                            "labels": labels,
                            "annotations": ann,
                            "ownerReferences": [
                                _owner_ref(dep, "Deployment", "apps/v1")
                            ],
                        },
                        "spec": {
                            "replicas": initial,
                            "selector": sel,
                            "template": rs_tmpl,
                        },
                    },
                    rt=rsrt,
                    manager=KCM,
                    validate_obj=False,
                )
                created = True
                dep_rev = str(rev)
                self._progress.pop(dep["metadata"]["uid"], None)
            else:
                rev = (
                    new_rs["metadata"]
                    .get("annotations", {})
                    .get("deployment.kubernetes.io/revision")
                )
                dep_rev = rev or dep_rev
                cur_new = int(new_rs["spec"].get("replicas", 0))
                if not olds:
                    target = replicas
                elif recreate:
                    target = (
                        replicas
                        if old_total == 0 and not self._active_pods_of(olds, ns)
                        else 0
                    )
                else:
                    target = max(cur_new, min(replicas, replicas + surge - old_total))
                    target = min(target, replicas)
                if target != cur_new:
                    self._scale_rs(new_rs, target)
                # scale down old replica sets within the availability budget
                pods_new = self._active_pods_of([new_rs], ns)
                new_ready = sum(1 for p in pods_new if pod_ready(p))
                all_ready = new_ready + sum(
                    1 for p in self._active_pods_of(olds, ns) if pod_ready(p)
                )
                can_remove = all_ready - (replicas - unavail)
                for old in sorted(
                    olds, key=lambda r: r["metadata"]["creationTimestamp"]
                ):
                    cur = int(old["spec"].get("replicas", 0))
                    if cur == 0:
                        continue
                    old_pods = self._active_pods_of([old], ns)
                    unready_old = sum(1 for p in old_pods if not pod_ready(p))
                    reduce = min(cur, max(0, can_remove) + unready_old)
                    if recreate:
                        reduce = cur
                    if reduce > 0:
                        self._scale_rs(old, cur - reduce)
                        can_remove -= max(0, reduce - unready_old)
            # deployment metadata annotation
            if (
                dep_rev
                and dep["metadata"]
                .get("annotations", {})
                .get("deployment.kubernetes.io/revision")
                != dep_rev
            ):

                def set_rev(o, r=dep_rev):
                    o["metadata"].setdefault("annotations", {})[
                        "deployment.kubernetes.io/revision"
                    ] = r

                dep = s.mutate(drt, ns, name, set_rev, manager=KCM)
            self._deployment_status(dep, new_rs, created)

    def _active_pods_of(self, rss: list[dict], ns: str) -> list[dict]:
        uids = {r["metadata"]["uid"] for r in rss}
        return [
            p
            for p in self.store.list_raw(resolve("pods"), ns)
            if _owner_uid(p) in uids and not p["metadata"].get("deletionTimestamp")
        ]

    def _scale_rs(self, rs: dict, replicas: int) -> None:
        def fn(o):
            o["spec"]["replicas"] = replicas

        self.store.mutate(
            "replicasets.apps",
            rs["metadata"]["namespace"],
            rs["metadata"]["name"],
            fn,
            manager=KCM,
        )

    def _deployment_status(self, dep: dict, new_rs: dict, created: bool) -> None:
        s = self.store
        ns = dep["metadata"]["namespace"]
        spec = dep["spec"]
        replicas = int(spec.get("replicas", 1))
        rss = self._owned("replicasets.apps", ns, dep["metadata"]["uid"])
        uids = {r["metadata"]["uid"] for r in rss}
        pods = [p for p in s.list_raw(resolve("pods"), ns) if _owner_uid(p) in uids]
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        terminating = len(pods) - len(active)
        new_uid = new_rs["metadata"]["uid"]
        updated = sum(1 for p in active if _owner_uid(p) == new_uid)
        ready = sum(1 for p in active if pod_ready(p))
        available = ready
        ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavail = _resolve_int_or_percent(
            ru.get("maxUnavailable", "25%"), replicas, False
        )
        old = dep.get("status") or {}
        conds = {c["type"]: c for c in copy.deepcopy(old.get("conditions") or [])}
        order = [c["type"] for c in old.get("conditions") or []]
        now = now_str()
        rs_name = new_rs["metadata"]["name"]
        complete = (
            updated == replicas
            and available == replicas
            and len(active) == replicas
            and terminating == 0
        )

        def set_cond(t, status, reason, message, touch=True):
            c = conds.get(t)
            if c is None:
                c = {
                    "type": t,
                    "status": status,
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                    "reason": reason,
                    "message": message,
                }
                conds[t] = c
                order.append(t)
                return
            if c["status"] != status:
                c["lastTransitionTime"] = now
            if touch and (
                c["status"] != status
                or c["reason"] != reason
                or c["message"] != message
            ):
                c["lastUpdateTime"] = now
            c.update({"status": status, "reason": reason, "message": message})

        if available >= replicas - max_unavail:
            set_cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            set_cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        uid = dep["metadata"]["uid"]
        snapshot = (
            dep["metadata"].get("generation"),
            updated,
            ready,
            len(active),
            terminating,
        )
        mono = time.monotonic()
        last = self._progress.get(uid)
        if last is None or last[0] != snapshot:
            self._progress[uid] = (snapshot, mono)
            last_progress = mono
        else:
            last_progress = last[1]
        deadline = (
            float(spec.get("progressDeadlineSeconds", 600)) * self.deadline_factor
        )
        prog = conds.get("Progressing")
        if complete:
            set_cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif (
            prog is not None
            and prog["reason"] == "ProgressDeadlineExceeded"
            and last is not None
            and last[0] == snapshot
        ):
            pass
        elif mono - last_progress > deadline:
            set_cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        elif created:
            set_cond(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{rs_name}"',
            )
        elif (
            prog is None
            or prog["reason"] != "NewReplicaSetCreated"
            or prog["message"] != f'Created new replica set "{rs_name}"'
            or updated > 0
        ):
            set_cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            )
        if not complete:
            self._timer(
                max(0.05, deadline - (mono - last_progress) + 0.01),
                "deadline",
                (ns, dep["metadata"]["name"], uid),
            )
        status: dict[str, Any] = {
            "observedGeneration": dep["metadata"].get("generation", 1)
        }
        for k, v in (
            ("replicas", len(active)),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", max(0, replicas - available)),
        ):
            if v:
                status[k] = v
        status["terminatingReplicas"] = terminating
        status["conditions"] = [conds[t] for t in order]
        if status == old:
            return
        new = copy.deepcopy(dep)
        new["status"] = status
        new["metadata"].pop("resourceVersion", None)
        s.replace(
            new, subresource="status", manager=KCM, rt=resolve("deployments.apps")
        )

    def _reconcile_rs(self, ns: str, name: str) -> None:
        s = self.store
        rt = resolve("replicasets.apps")
        with s.lock:
            rs = s.get_raw(rt, ns, name)
            if rs is None:
                return
            if self._finish_foreground("replicasets.apps", rs, "pods"):
                return
            self._ensure_pods(rs, "ReplicaSet", int(rs["spec"].get("replicas", 1)))
            self._workload_status(rs, rt)

    def _ensure_pods(
        self,
        owner: dict,
        kind: str,
        replicas: int,
        names: list[str] | None = None,
        node_for: dict | None = None,
    ) -> None:
        s = self.store
        ns = owner["metadata"]["namespace"]
        prt = resolve("pods")
        pods = [
            p
            for p in s.list_raw(prt, ns)
            if _owner_uid(p) == owner["metadata"]["uid"]
            and not p["metadata"].get("deletionTimestamp")
        ]
        tmpl = owner["spec"]["template"]
        if names is not None:
            have = {p["metadata"]["name"] for p in pods}
            for p in pods:
                if p["metadata"]["name"] not in names:
                    s.delete(prt, ns, p["metadata"]["name"])
            for n in names:
                if n not in have and s.get_raw(prt, ns, n) is None:
                    self._create_pod(
                        owner, kind, tmpl, name=n, node=(node_for or {}).get(n)
                    )
            return
        diff = replicas - len(pods)
        for _ in range(max(0, diff)):
            self._create_pod(owner, kind, tmpl)
        if diff < 0:
            # unscheduled first, then not ready, then the newest
            victims = sorted(
                pods,
                key=lambda p: p["metadata"].get("creationTimestamp", ""),
                reverse=True,
            )
            victims = sorted(
                victims,
                key=lambda p: (
                    bool((p.get("spec") or {}).get("nodeName")),
                    pod_ready(p),
                ),
            )[:-diff]
            for p in victims:
                s.delete(prt, ns, p["metadata"]["name"])

    def _create_pod(
        self,
        owner: dict,
        kind: str,
        tmpl: dict,
        name: str | None = None,
        node: str | None = None,
    ) -> None:
        meta = copy.deepcopy(tmpl.get("metadata") or {})
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = owner["metadata"]["name"] + "-"
        meta["namespace"] = owner["metadata"]["namespace"]
        meta["ownerReferences"] = [_owner_ref(owner, kind, "apps/v1")]
        spec = copy.deepcopy(tmpl.get("spec") or {})
        if node:
            spec["nodeName"] = node
        self.store.create(
            {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec},
            rt=resolve("pods"),
            manager=KCM,
            validate_obj=False,
        )

    def _workload_status(self, obj: dict, rt) -> None:
        s = self.store
        ns = obj["metadata"]["namespace"]
        pods = [
            p
            for p in s.list_raw(resolve("pods"), ns)
            if _owner_uid(p) == obj["metadata"]["uid"]
        ]
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in active if pod_ready(p))
        old = obj.get("status") or {}
        status: dict[str, Any] = {"replicas": len(active)}
        if rt.kind == "ReplicaSet":
            if active:
                status["fullyLabeledReplicas"] = len(active)
            if ready:
                status["readyReplicas"] = ready
                status["availableReplicas"] = ready
            status["terminatingReplicas"] = len(pods) - len(active)
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
        else:  # StatefulSet
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
            if ready:
                status["readyReplicas"] = ready
            status["currentReplicas"] = len(active)
            status["updatedReplicas"] = len(active)
            rev = f"{obj['metadata']['name']}-{template_hash(obj['spec']['template'])}"
            status["currentRevision"] = rev
            status["updateRevision"] = rev
            status["collisionCount"] = 0
            status["availableReplicas"] = ready
        if status == old:
            return
        new = copy.deepcopy(obj)
        new["status"] = status
        new["metadata"].pop("resourceVersion", None)
        s.replace(new, subresource="status", manager=KCM, rt=rt)

    def _reconcile_sts(self, ns: str, name: str) -> None:
        s = self.store
        rt = resolve("statefulsets.apps")
        with s.lock:
            sts = s.get_raw(rt, ns, name)
            if sts is None:
                return
            if self._finish_foreground("statefulsets.apps", sts, "pods"):
                return
            n = int(sts["spec"].get("replicas", 1))
            self._ensure_pods(
                sts, "StatefulSet", n, names=[f"{name}-{i}" for i in range(n)]
            )
            self._workload_status(sts, rt)

    def _reconcile_ds(self, ns: str, name: str) -> None:
        s = self.store
        rt = resolve("daemonsets.apps")
        with s.lock:
            ds = s.get_raw(rt, ns, name)
            if ds is None:
                return
            if self._finish_foreground("daemonsets.apps", ds, "pods"):
                return
            nodes = sorted(
                n["metadata"]["name"]
                for n in s.list_raw(resolve("nodes"))
                if not (n.get("spec") or {}).get("unschedulable")
            )
            names = {f"{name}-{template_hash({'n': n})[:5]}": n for n in nodes}
            self._ensure_pods(
                ds, "DaemonSet", len(nodes), names=list(names), node_for=names
            )
            pods = [
                p
                for p in s.list_raw(resolve("pods"), ns)
                if _owner_uid(p) == ds["metadata"]["uid"]
                and not p["metadata"].get("deletionTimestamp")
            ]
            ready = sum(1 for p in pods if pod_ready(p))
            status = {
                "currentNumberScheduled": len(pods),
                "numberMisscheduled": 0,
                "desiredNumberScheduled": len(nodes),
                "numberReady": ready,
                "observedGeneration": ds["metadata"].get("generation", 1),
                "updatedNumberScheduled": len(pods),
                "numberAvailable": ready,
            }
            if len(nodes) - ready:
                status["numberUnavailable"] = len(nodes) - ready
            if status != ds.get("status"):
                new = copy.deepcopy(ds)
                new["status"] = status
                new["metadata"].pop("resourceVersion", None)
                s.replace(new, subresource="status", manager=KCM, rt=rt)

    def _reconcile_pdbs(self, ns: str) -> None:
        s = self.store
        rt = resolve(("policy", "poddisruptionbudgets"))
        with s.lock:
            for pdb in s.list_raw(rt, ns):
                sel = (pdb.get("spec") or {}).get("selector")
                pods = [
                    p
                    for p in s.list_raw(resolve("pods"), ns)
                    if match_label_selector_obj(sel, p["metadata"].get("labels") or {})
                    and not p["metadata"].get("deletionTimestamp")
                ]
                expected = len(pods)
                healthy = sum(1 for p in pods if pod_ready(p))
                spec = pdb.get("spec") or {}
                if "minAvailable" in spec:
                    desired = _resolve_int_or_percent(
                        spec["minAvailable"], expected, True
                    )
                elif "maxUnavailable" in spec:
                    desired = max(
                        0,
                        expected
                        - _resolve_int_or_percent(
                            spec["maxUnavailable"], expected, True
                        ),
                    )
                else:
                    desired = expected
                allowed = max(0, healthy - desired)
                gen = pdb["metadata"].get("generation", 1)
                old = pdb.get("status") or {}
                old_cond = next(
                    (
                        c
                        for c in old.get("conditions") or []
                        if c.get("type") == "DisruptionAllowed"
                    ),
                    None,
                )
                cstatus = "True" if allowed > 0 else "False"
                cond = {
                    "type": "DisruptionAllowed",
                    "status": cstatus,
                    "observedGeneration": gen,
                    "lastTransitionTime": old_cond["lastTransitionTime"]
                    if old_cond and old_cond["status"] == cstatus
                    else now_str(),
                    "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                    "message": "",
                }
                status = {
                    "observedGeneration": gen,
                    "disruptionsAllowed": allowed,
                    "currentHealthy": healthy,
                    "desiredHealthy": desired,
                    "expectedPods": expected,
                    "conditions": [cond],
                }
                if status != old:
                    new = copy.deepcopy(pdb)
                    new["status"] = status
                    new["metadata"].pop("resourceVersion", None)
                    s.replace(new, subresource="status", manager=KCM, rt=rt)

    def _reconcile_hpa(self, ns: str, name: str) -> None:
        s = self.store
        rt = resolve(("autoscaling", "horizontalpodautoscalers"))
        with s.lock:
            hpa = s.get_raw(rt, ns, name)
            if hpa is None:
                return
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            target = None
            if ref.get("kind") == "Deployment":
                target = s.get_raw(resolve("deployments.apps"), ns, ref.get("name", ""))
            old = hpa.get("status") or {}
            now = now_str()
            conds = {c["type"]: c for c in old.get("conditions") or []}
            if target is None:
                able = {
                    "type": "AbleToScale",
                    "status": "False",
                    "reason": "FailedGetScale",
                    "message": f"the HPA controller was unable to get the target's current "
                    f'scale: deployments/scale.apps "{ref.get("name")}" not found',
                }
            else:
                able = {
                    "type": "AbleToScale",
                    "status": "True",
                    "reason": "SucceededGetScale",
                    "message": "the HPA controller was able to get the target's current scale",
                }
            active = {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetResourceMetric",
                "message": "the HPA was unable to compute the replica count: failed to get "
                "cpu utilization: unable to get metrics for resource cpu: unable "
                "to fetch metrics from resource metrics API: the server could not "
                "find the requested resource (get pods.metrics.k8s.io)",
            }
            out = []
            for c in (able, active):
                prev = conds.get(c["type"])
                ltt = (
                    prev["lastTransitionTime"]
                    if prev and prev["status"] == c["status"]
                    else now
                )
                out.append(
                    {
                        "type": c["type"],
                        "status": c["status"],
                        "lastTransitionTime": ltt,
                        "reason": c["reason"],
                        "message": c["message"],
                    }
                )
            status: dict[str, Any] = {}
            if target is not None:
                status["currentReplicas"] = (target.get("status") or {}).get(
                    "replicas", 0
                )
            status["desiredReplicas"] = 0
            status["currentMetrics"] = [{"type": ""}]
            status["conditions"] = out
            if status != old:
                new = copy.deepcopy(hpa)
                new["status"] = status
                new["metadata"].pop("resourceVersion", None)
                s.replace(new, subresource="status", manager=KCM, rt=rt)


# ---------------------------------------------------------------------- bulk helpers


def make_node(name: str, zone: str, ip: str) -> dict:
    now = now_str()
    conds = [
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "fake",
                "topology.kubernetes.io/zone": zone,
            },
        },
        "spec": {},
        "status": {
            "capacity": {
                "cpu": "8",
                "ephemeral-storage": "100Gi",
                "memory": "32Gi",
                "pods": "110",
            },
            "allocatable": {
                "cpu": "8",
                "ephemeral-storage": "100Gi",
                "memory": "32Gi",
                "pods": "110",
            },
            "conditions": [
                {
                    "type": t,
                    "status": st,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                    "reason": r,
                    "message": m,
                }
                for t, st, r, m in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": "6.1.0-fake",
                "osImage": "Fake OS",
                "containerRuntimeVersion": "fake://1.0.0",
                "kubeletVersion": "v1.36.2",
                "kubeProxyVersion": "v1.36.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _running_status(
    pod_ip: str, host_ip: str, containers: list[dict], now: str
) -> dict:
    conds = [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        for t in (
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodScheduled",
        )
    ]
    return {
        "phase": "Running",
        "conditions": conds,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "containerStatuses": [
            {
                "name": c["name"],
                "state": {"running": {"startedAt": now}},
                "lastState": {},
                "ready": True,
                "restartCount": 0,
                "image": c["image"],
                "imageID": f"fake://{c['image']}",
                "containerID": f"fake://{c['name']}",
                "started": True,
            }
            for c in containers
        ],
        "qosClass": "Burstable",
    }


def populate(
    store: Store,
    *,
    nodes: int = 3,
    pods: int = 10,
    namespaces: int = 2,
    deployments: int = 0,
    seed: int = 0,
) -> None:
    """Bulk-load a steady-state cluster: nodes, namespaces, Deployments (with ReplicaSets and
    Running pods) and bare pods. No per-object watch events: the history is compacted to the
    new revision, so watches must start from a list done after populate."""
    from .resources import admit, default_object, lookup, order_object

    rng = random.Random(seed)
    now = now_str()
    prt = lookup("", "v1", "pods")
    node_names = [f"node-{i:04d}" for i in range(nodes)]
    ns_names = [f"ns-{i:02d}" for i in range(namespaces)]
    objs: list[dict] = []
    for i, n in enumerate(node_names):
        objs.append(make_node(n, f"zone-{i % 3}", f"10.0.{i // 250}.{i % 250 + 1}"))
    for ns in ns_names:
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    with store.lock:
        existing_ns = {
            o["metadata"]["name"] for o in store.list_raw(resolve("namespaces"))
        }
        objs = [
            o
            for o in objs
            if not (o["kind"] == "Namespace" and o["metadata"]["name"] in existing_ns)
        ]
        store.bulk_load(objs)
        uid = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731

        def insert(obj: dict, rt) -> dict:
            m = obj["metadata"]
            m.setdefault("uid", uid())
            m.setdefault("creationTimestamp", now)
            if rt.has_generation:
                m.setdefault("generation", 1)
            m["resourceVersion"] = str(store._next_rv())  # noqa: SLF001
            obj = order_object(obj)
            store._bucket(rt.key)[(m.get("namespace", ""), m["name"])] = obj  # noqa: SLF001
            return obj

        per_dep = max(1, pods // max(1, deployments)) if deployments else 0
        remaining = pods
        n_ip = 0
        drt, rsrt = resolve("deployments.apps"), resolve("replicasets.apps")

        spec_cache: dict = {}

        def make_pod(ns, name, labels, containers, owner=None, gen_name=None):
            # Pods of one owner share their (never mutated in place) spec sub-objects:
            # the store copies before every write, so this is safe and keeps populate fast.
            nonlocal n_ip
            node = node_names[n_ip % len(node_names)] if node_names else None
            n_ip += 1
            key = (ns, gen_name or "")
            if key not in spec_cache:
                proto = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "x", "namespace": ns},
                    "spec": {"containers": copy.deepcopy(containers)},
                }
                default_object(prt, proto, rng)
                admit(prt, proto, rng)
                running = _running_status(
                    "0.0.0.0", "10.0.0.1", proto["spec"]["containers"], now
                )
                spec_cache[key] = (proto["spec"], running)
            spec, running = spec_cache[key]
            meta = {"name": name, "namespace": ns, "labels": labels}
            if gen_name:
                meta = {
                    "name": name,
                    "generateName": gen_name,
                    "namespace": ns,
                    "labels": labels,
                }
            if owner:
                meta["ownerReferences"] = [owner]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta,
                "spec": dict(spec),
            }
            if node:
                ip = f"10.244.{n_ip // 250 % 250}.{n_ip % 250 + 1}"
                pod["spec"]["nodeName"] = node
                pod["status"] = dict(running, podIP=ip, podIPs=[{"ip": ip}])
            else:
                pod["status"] = {"phase": "Pending", "qosClass": running["qosClass"]}
            return insert(pod, prt)

        containers = [
            {
                "name": "app",
                "image": "nginx:1.27",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }
        ]
        for d in range(deployments):
            ns = ns_names[d % len(ns_names)] if ns_names else "default"
            name = f"app-{d:03d}"
            reps = min(per_dep, remaining)
            remaining -= reps
            tmpl = {
                "metadata": {"labels": {"app": name}},
                "spec": copy.deepcopy(containers)
                and {"containers": copy.deepcopy(containers)},
            }
            dep = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {"app": name},
                    "annotations": {"deployment.kubernetes.io/revision": "1"},
                },
                "spec": {
                    "replicas": reps,
                    "selector": {"matchLabels": {"app": name}},
                    "template": tmpl,
                },
            }
            default_object(drt, dep, rng)
            phash = template_hash(dep["spec"]["template"])
            dep["status"] = {
                "observedGeneration": 1,
                "replicas": reps,
                "updatedReplicas": reps,
                "readyReplicas": reps,
                "availableReplicas": reps,
                "terminatingReplicas": 0,
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                        "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                        "reason": "NewReplicaSetAvailable",
                        "message": f'ReplicaSet "{name}-{phash}" has successfully progressed.',
                    },
                ],
            }
            dep = insert(dep, drt)
            labels = {"app": name, "pod-template-hash": phash}
            rs_tmpl = copy.deepcopy(dep["spec"]["template"])
            rs_tmpl["metadata"]["labels"] = labels
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{phash}",
                    "namespace": ns,
                    "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": "1"},
                    "ownerReferences": [_owner_ref(dep, "Deployment", "apps/v1")],
                },
                "spec": {
                    "replicas": reps,
                    "selector": {"matchLabels": labels},
                    "template": rs_tmpl,
                },
                "status": {
                    "replicas": reps,
                    "fullyLabeledReplicas": reps,
                    "readyReplicas": reps,
                    "availableReplicas": reps,
                    "observedGeneration": 1,
                    "terminatingReplicas": 0,
                },
            }
            rs = insert(rs, rsrt)
            owner = _owner_ref(rs, "ReplicaSet", "apps/v1")
            for _ in range(reps):
                suffix = "".join(
                    rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
                )
                make_pod(
                    ns,
                    f"{rs['metadata']['name']}-{suffix}",
                    labels,
                    containers,
                    owner,
                    rs["metadata"]["name"] + "-",
                )
        for i in range(remaining):
            ns = ns_names[i % len(ns_names)] if ns_names else "default"
            make_pod(ns, f"pod-{i:05d}", {"app": f"bare-{i % 10}"}, containers)
        store.compact()


def churn(
    store: Store,
    changes_per_second: float = 50,
    duration: float = 10.0,
    namespace: str | None = None,
    seed: int = 0,
) -> threading.Thread:
    """Start a daemon thread making ~changes_per_second pod writes for ``duration`` seconds:
    label updates (MODIFIED), deletes (DELETED) and creates (ADDED). ``thread.stop()`` ends
    it early; ``thread.join()`` waits."""
    rng = random.Random(seed)
    stop = threading.Event()
    prt = resolve("pods")

    def run():
        interval = 1.0 / max(changes_per_second, 0.001)
        end = time.monotonic() + duration
        nxt = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() < end:
            with store.lock:
                pods = store.list_raw(prt, namespace)
                choice = rng.random()
                try:
                    if pods and choice < 0.7:
                        p = rng.choice(pods)
                        m = p["metadata"]

                        def fn(o, n=n):
                            o["metadata"].setdefault("labels", {})["churn"] = str(n)

                        store.mutate(
                            prt, m["namespace"], m["name"], fn, manager="churn"
                        )
                    elif pods and choice < 0.85:
                        p = rng.choice(pods)
                        store.force_delete(
                            prt, p["metadata"]["namespace"], p["metadata"]["name"]
                        )
                    else:
                        ns = namespace or (
                            rng.choice(pods)["metadata"]["namespace"]
                            if pods
                            else "default"
                        )
                        store.create(
                            {
                                "apiVersion": "v1",
                                "kind": "Pod",
                                "metadata": {
                                    "generateName": "churn-",
                                    "namespace": ns,
                                    "labels": {"app": "churn"},
                                },
                                "spec": {
                                    "containers": [
                                        {"name": "c", "image": "busybox:1.36"}
                                    ]
                                },
                            },
                            manager="churn",
                        )
                except ApiError:
                    pass
            n += 1
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                stop.wait(delay)

    t = threading.Thread(target=run, name="fakekube-churn", daemon=True)
    t.stop = stop.set  # type: ignore[attr-defined]
    t.start()
    return t


__all__ = [
    "Controllers",
    "bind_pod",
    "populate",
    "churn",
    "make_node",
    "label_selector_string",
]
