"""Compact projections of Kubernetes objects: what the pages show, nothing more.

The monitor keeps these (not whole objects) in memory and in Redis: a pod's
projection is a few hundred bytes where the object is several kilobytes with
managedFields, which is what keeps 30,000 pods inside the memory budget. Plain
functions of a dict; no Django, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]

_MEM_SUFFIX = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def quantity(value: Any) -> Decimal:
    """Return a Kubernetes quantity (``100m``, ``1Gi``, ``2``) as a Decimal; 0 if bad."""
    if value is None:
        return Decimal(0)
    m = _QTY.match(str(value).strip())
    if not m:
        return Decimal(0)
    number, suffix = m.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        return Decimal(0)
    if not suffix:
        return base
    factor = _MEM_SUFFIX.get(suffix)
    return base * Decimal(factor) if factor is not None else Decimal(0)


def cpu_millicores(value: Any) -> int:
    """Return a CPU quantity in millicores."""
    return int(quantity(value) * 1000)


def memory_bytes(value: Any) -> int:
    """Return a memory quantity in bytes."""
    return int(quantity(value))


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def key_of(obj: Obj) -> str:
    """Return ``namespace/name`` (or ``name`` for cluster-scoped objects)."""
    meta = _meta(obj)
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _base(obj: Obj) -> Obj:
    meta = _meta(obj)
    out: Obj = {"name": meta.get("name"), "created": meta.get("creationTimestamp")}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    owners = meta.get("ownerReferences") or []
    if owners:
        owner = next((o for o in owners if o.get("controller")), owners[0])
        out["owner"] = f"{owner.get('kind')}/{owner.get('name')}"
    return out


def _bad_conditions(obj: Obj, good: dict[str, str]) -> list[str]:
    """Return "Type: reason" for conditions not in their good state."""
    bad = []
    for c in (obj.get("status") or {}).get("conditions") or []:
        want = good.get(c.get("type", ""))
        if want is not None and c.get("status") != want:
            bad.append(f"{c.get('type')}: {c.get('reason') or c.get('status')}")
    return bad


def pod(obj: Obj) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    containers = spec.get("containers") or []
    phase = status.get("phase") or "Pending"
    reason = status.get("reason") or ""
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            reason = waiting["reason"]
        elif terminated.get("reason") and phase == "Running":
            reason = terminated["reason"]
    if _meta(obj).get("deletionTimestamp"):
        reason = "Terminating"
    cpu = mem = 0
    for c in containers:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += cpu_millicores(req.get("cpu"))
        mem += memory_bytes(req.get("memory"))
    out.update(
        phase=phase,
        ready=f"{sum(1 for cs in statuses if cs.get('ready'))}/{len(containers)}",
        restarts=sum(int(cs.get("restartCount") or 0) for cs in statuses),
        node=spec.get("nodeName") or "",
        ip=status.get("podIP") or "",
        containers=[c.get("name") for c in containers],
        cpu_req=cpu,
        mem_req=mem,
    )
    if reason:
        out["reason"] = reason
    return out


def node(obj: Obj) -> Obj:
    out = _base(obj)
    meta = _meta(obj)
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    ready = "Unknown"
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    roles = sorted(
        label.split("/", 1)[1]
        for label in (meta.get("labels") or {})
        if label.startswith("node-role.kubernetes.io/")
    )
    cap = status.get("capacity") or {}
    alloc = status.get("allocatable") or {}
    out.update(
        status=ready,
        unschedulable=bool(spec.get("unschedulable")),
        roles=roles,
        kubelet=(status.get("nodeInfo") or {}).get("kubeletVersion", ""),
        cpu_capacity=cpu_millicores(cap.get("cpu")),
        mem_capacity=memory_bytes(cap.get("memory")),
        cpu_alloc=cpu_millicores(alloc.get("cpu")),
        mem_alloc=memory_bytes(alloc.get("memory")),
        pods_alloc=int(quantity(alloc.get("pods"))),
        problems=_bad_conditions(
            obj,
            {
                "Ready": "True",
                "MemoryPressure": "False",
                "DiskPressure": "False",
                "PIDPressure": "False",
                "NetworkUnavailable": "False",
            },
        ),
        taints=[
            f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
            for t in spec.get("taints") or []
        ],
    )
    return out


def _workload(obj: Obj, desired: int, ready: int, updated: int, available: int) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    template = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    meta = _meta(obj)
    status = obj.get("status") or {}
    out.update(
        desired=desired,
        ready=ready,
        updated=updated,
        available=available,
        containers=[c.get("name") for c in template],
        images=[c.get("image") for c in template][:5],
        generation=int(meta.get("generation") or 0),
        observed=int(status.get("observedGeneration") or 0),
        problems=_bad_conditions(obj, {"Available": "True", "ReplicaFailure": "False"}),
    )
    return out


def _replicas(spec: Obj) -> int:
    value = spec.get("replicas")
    return 1 if value is None else int(value)


def deployment(obj: Obj) -> Obj:
    s = obj.get("status") or {}
    return _workload(
        obj,
        _replicas(obj.get("spec") or {}),
        int(s.get("readyReplicas") or 0),
        int(s.get("updatedReplicas") or 0),
        int(s.get("availableReplicas") or 0),
    )


statefulset = deployment


def replicaset(obj: Obj) -> Obj:
    out = deployment(obj)
    out.pop("images", None)
    return out


def daemonset(obj: Obj) -> Obj:
    s = obj.get("status") or {}
    return _workload(
        obj,
        int(s.get("desiredNumberScheduled") or 0),
        int(s.get("numberReady") or 0),
        int(s.get("updatedNumberScheduled") or 0),
        int(s.get("numberAvailable") or 0),
    )


def _metric_text(m: Obj, current: bool) -> str:
    kind = m.get("type") or ""
    body = (
        m.get(
            {
                "Resource": "resource",
                "Pods": "pods",
                "Object": "object",
                "External": "external",
                "ContainerResource": "containerResource",
            }.get(kind, ""),
            {},
        )
        or {}
    )
    name = body.get("name") or (body.get("metric") or {}).get("name") or kind
    value = body.get("current" if current else "target") or {}
    if "averageUtilization" in value:
        return f"{name} {value['averageUtilization']}%"
    for field in ("averageValue", "value"):
        if field in value:
            return f"{name} {value[field]}"
    return f"{name} ?" if name else "?"


def horizontalpodautoscaler(obj: Obj) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    current = [
        _metric_text(m, True)
        for m in status.get("currentMetrics") or []
        if m.get("type")
    ]
    targets = [_metric_text(m, False) for m in spec.get("metrics") or []]
    cpu_target = None
    for m in spec.get("metrics") or []:
        res = m.get("resource") or {}
        if m.get("type") == "Resource" and res.get("name") == "cpu":
            cpu_target = (res.get("target") or {}).get("averageUtilization")
    out.update(
        target=f"{ref.get('kind')}/{ref.get('name')}",
        min=int(spec.get("minReplicas") or 1),
        max=int(spec.get("maxReplicas") or 0),
        current=int(status.get("currentReplicas") or 0),
        desired=int(status.get("desiredReplicas") or 0),
        targets=targets,
        metrics=current,
        cpu_target=cpu_target,
        problems=_bad_conditions(obj, {"AbleToScale": "True", "ScalingActive": "True"}),
    )
    return out


def event(obj: Obj) -> Obj:
    out = _base(obj)
    inv = obj.get("involvedObject") or obj.get("regarding") or {}
    out.update(
        type=obj.get("type") or "Normal",
        reason=obj.get("reason") or "",
        message=(obj.get("message") or obj.get("note") or "")[:500],
        object=f"{inv.get('kind')}/{inv.get('name')}",
        count=int(obj.get("count") or (obj.get("series") or {}).get("count") or 1),
        last=obj.get("lastTimestamp")
        or obj.get("eventTime")
        or _meta(obj).get("creationTimestamp"),
    )
    return out


def service(obj: Obj) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    lb = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out.update(
        type=spec.get("type") or "ClusterIP",
        cluster_ip=spec.get("clusterIP") or "",
        external=[i.get("ip") or i.get("hostname") for i in lb]
        + list(spec.get("externalIPs") or []),
        ports=[
            f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
            f"/{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        ],
        selector=",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()),
    )
    return out


def ingress(obj: Obj) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    lb = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out.update(
        ingress_class=spec.get("ingressClassName") or "",
        hosts=[r.get("host") or "*" for r in spec.get("rules") or []],
        addresses=[i.get("ip") or i.get("hostname") for i in lb],
        tls=bool(spec.get("tls")),
    )
    return out


def persistentvolume(obj: Obj) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    claim = spec.get("claimRef") or {}
    out.update(
        capacity=(spec.get("capacity") or {}).get("storage", ""),
        access_modes=spec.get("accessModes") or [],
        reclaim=spec.get("persistentVolumeReclaimPolicy") or "",
        phase=(obj.get("status") or {}).get("phase") or "",
        claim=f"{claim.get('namespace')}/{claim.get('name')}" if claim else "",
        storage_class=spec.get("storageClassName") or "",
    )
    return out


def persistentvolumeclaim(obj: Obj) -> Obj:
    out = _base(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out.update(
        phase=status.get("phase") or "Pending",
        volume=spec.get("volumeName") or "",
        capacity=(status.get("capacity") or {}).get("storage")
        or ((spec.get("resources") or {}).get("requests") or {}).get("storage", ""),
        access_modes=spec.get("accessModes") or [],
        storage_class=spec.get("storageClassName") or "",
    )
    return out


def storageclass(obj: Obj) -> Obj:
    out = _base(obj)
    ann = _meta(obj).get("annotations") or {}
    out.update(
        provisioner=obj.get("provisioner") or "",
        reclaim=obj.get("reclaimPolicy") or "Delete",
        binding=obj.get("volumeBindingMode") or "Immediate",
        default=ann.get("storageclass.kubernetes.io/is-default-class") == "true",
    )
    return out


PROJECTIONS: dict[str, Callable[[Obj], Obj]] = {
    "nodes": node,
    "pods": pod,
    "deployments": deployment,
    "statefulsets": statefulset,
    "daemonsets": daemonset,
    "replicasets": replicaset,
    "horizontalpodautoscalers": horizontalpodautoscaler,
    "events": event,
    "services": service,
    "ingresses": ingress,
    "persistentvolumes": persistentvolume,
    "persistentvolumeclaims": persistentvolumeclaim,
    "storageclasses": storageclass,
}


def project(kind: str, obj: Obj) -> Obj:
    """Return the compact projection of OBJ, a KIND (plural) object."""
    return PROJECTIONS[kind](obj)
