"""Resource registry (built from recorded discovery) and per-kind defaulting/validation."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

_DATA = json.loads((Path(__file__).parent / "data" / "discovery.json").read_text())

VERSION_INFO: dict = _DATA["version"]
READYZ_VERBOSE: str = _DATA["readyz"]
LIVEZ_VERBOSE: str = _DATA["livez"]

GENERATION_KINDS = {
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Pod",
    "PodDisruptionBudget",
    "Ingress",
    "Job",
    "CronJob",
    "NetworkPolicy",
    "ReplicationController",
    "CustomResourceDefinition",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "ValidatingAdmissionPolicy",
    "MutatingAdmissionPolicy",
    "ServiceCIDR",
    "ResourceClaim",
}
# Create-only "virtual" resources answered by handlers, not stored.
VIRTUAL = {
    "bindings",
    "selfsubjectrulesreviews",
    "selfsubjectaccessreviews",
    "selfsubjectreviews",
    "tokenreviews",
}
FIELD_SELECTORS = {
    "pods": {
        "spec.nodeName",
        "status.phase",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "nodes": {"spec.unschedulable"},
    "events": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "secrets": {"type"},
    "namespaces": {"status.phase"},
    "replicasets": {"status.replicas"},
    "jobs": {"status.successful"},
}


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    verbs: list[str]
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: dict[str, dict] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_generation(self) -> bool:
        return self.kind in GENERATION_KINDS

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def storage_version_hash(self) -> str:
        digest = hashlib.sha256(f"{self.api_version}/{self.kind}".encode()).digest()
        return base64.b64encode(digest[:8]).decode()


def _build() -> tuple[dict, list]:
    reg: dict[tuple[str, str, str], ResourceType] = {}
    groups = []
    for item in [_DATA["core"], *_DATA["groups"]]:
        gname = item["metadata"].get("name", "")
        groups.append(item)
        for v in item["versions"]:
            for r in v["resources"]:
                rt = ResourceType(
                    group=gname,
                    version=v["version"],
                    plural=r["resource"],
                    kind=r["responseKind"]["kind"],
                    namespaced=r["scope"] == "Namespaced",
                    singular=r.get("singularResource", ""),
                    verbs=r["verbs"],
                    short_names=r.get("shortNames", []),
                    categories=r.get("categories", []),
                    subresources={
                        s["subresource"]: s for s in r.get("subresources", [])
                    },
                )
                reg[(gname, v["version"], rt.plural)] = rt
    return reg, groups


REGISTRY, AGGREGATED_GROUPS = _build()
CORE_AGGREGATED = AGGREGATED_GROUPS[0]
NAMED_AGGREGATED = AGGREGATED_GROUPS[1:]

METRICS_GROUP = {
    "metadata": {"name": "metrics.k8s.io"},
    "versions": [
        {
            "version": "v1beta1",
            "resources": [
                {
                    "resource": "nodes",
                    "responseKind": {"group": "", "version": "", "kind": "NodeMetrics"},
                    "scope": "Cluster",
                    "singularResource": "",
                    "verbs": ["get", "list"],
                },
                {
                    "resource": "pods",
                    "responseKind": {"group": "", "version": "", "kind": "PodMetrics"},
                    "scope": "Namespaced",
                    "singularResource": "",
                    "verbs": ["get", "list"],
                },
            ],
            "freshness": "Current",
        }
    ],
}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return REGISTRY.get((group, version, plural))


def by_kind(kind: str, api_version: str | None = None) -> ResourceType | None:
    for rt in REGISTRY.values():
        if rt.kind == kind and (api_version is None or rt.api_version == api_version):
            return rt
    return None


def known_group_versions() -> set[tuple[str, str]]:
    return {(g, v) for (g, v, _) in REGISTRY}


# ------------------------------------------------------------------ names

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS1123 = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def random_suffix(n: int = 5, rng: random.Random | None = None) -> str:
    rng = rng or random
    return "".join(rng.choice(_NAME_ALPHABET) for _ in range(n))


def template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    out = ""
    for _ in range(10):
        n, r = divmod(n, len(_NAME_ALPHABET))
        out += _NAME_ALPHABET[r]
    return out


# ------------------------------------------------------------------ defaulting

_CONTAINER_ORDER = [
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
]
_POD_SPEC_ORDER = [
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
]
_META_ORDER = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
]


def _ordered(d: dict, order: list[str]) -> dict:
    out = {k: d[k] for k in order if k in d}
    out.update({k: v for k, v in d.items() if k not in out})
    return out


def order_object(obj: dict) -> dict:
    """Put keys in the order the Go structs serialise them (cosmetic)."""
    out = {}
    for k in ("kind", "apiVersion", "metadata"):
        if k in obj:
            out[k] = obj[k]
    for k, v in obj.items():
        if k not in out:
            out[k] = v
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = _ordered(out["metadata"], _META_ORDER)
    return out


def _default_container(c: dict) -> dict:
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if "imagePullPolicy" not in c:
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        latest = ":" not in tag or tag.endswith(":latest")
        if "@" in image:
            latest = False
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "fieldRef" in vf:
            vf["fieldRef"].setdefault("apiVersion", "v1")
    return _ordered(c, _CONTAINER_ORDER)


def default_pod_spec(spec: dict) -> dict:
    spec["containers"] = [_default_container(c) for c in spec.get("containers") or []]
    if spec.get("initContainers"):
        spec["initContainers"] = [_default_container(c) for c in spec["initContainers"]]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for v in spec.get("volumes") or []:
        for src, dflt in (("configMap", 420), ("secret", 420), ("projected", 420)):
            if src in v:
                v[src].setdefault("defaultMode", dflt)
        if "emptyDir" in v and v["emptyDir"] is None:
            v["emptyDir"] = {}
    return _ordered(spec, _POD_SPEC_ORDER)


def _qos(spec: dict) -> str:
    reqs, lims = [], []
    for c in spec.get("containers") or []:
        r = (c.get("resources") or {}).get("requests") or {}
        lim = (c.get("resources") or {}).get("limits") or {}
        reqs.append(r)
        lims.append(lim)
    if not any(reqs) and not any(lims):
        return "BestEffort"
    guaranteed = True
    for r, lim in zip(reqs, lims, strict=True):
        for res in ("cpu", "memory"):
            if res not in lim or r.get(res, lim[res]) != lim[res]:
                guaranteed = False
    return "Guaranteed" if guaranteed else "Burstable"


def admit(rt: ResourceType, obj: dict, rng: random.Random | None = None) -> None:
    """Admission plugins (ServiceAccount, DefaultTolerationSeconds, Priority): fields they
    add are not owned by the creating manager."""
    if rt.kind != "Pod":
        return
    spec = obj.setdefault("spec", {})
    if spec.get("automountServiceAccountToken") is not False and not any(
        (m.get("mountPath") == "/var/run/secrets/kubernetes.io/serviceaccount")
        for c in spec.get("containers") or []
        for m in c.get("volumeMounts") or []
    ):
        # Upstream kube-api-access volume: 3 projected sources (the recorded server, an
        # OpenShift build, adds a 4th ConfigMap source; upstream does not).
        vname = "kube-api-access-" + random_suffix(5, rng)
        spec.setdefault("volumes", []).append(
            {
                "name": vname,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "expirationSeconds": 3607,
                                "path": "token",
                            }
                        },
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                    ],
                    "defaultMode": 420,
                },
            }
        )
        for c in spec.get("containers") or []:
            c.setdefault("volumeMounts", []).append(
                {
                    "name": vname,
                    "readOnly": True,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }
            )
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault(
        "tolerations",
        [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    )
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec["containers"] = [
        _ordered(c, _CONTAINER_ORDER) for c in spec.get("containers") or []
    ]
    obj["spec"] = _ordered(spec, _POD_SPEC_ORDER)


def default_pod(obj: dict, rng: random.Random | None = None) -> None:
    """Scheme defaulting (fields the creating manager then owns)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("enableServiceLinks", True)
    obj["spec"] = default_pod_spec(spec)
    status = obj.get("status") or {}
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", _qos(obj["spec"]))
    obj["status"] = status


def _default_template(spec: dict) -> None:
    tmpl = spec.setdefault("template", {})
    tmpl.setdefault("metadata", {})
    tmpl["spec"] = default_pod_spec(tmpl.setdefault("spec", {}))


def default_object(
    rt: ResourceType, obj: dict, rng: random.Random | None = None
) -> None:
    kind = rt.kind
    spec = obj.get("spec")
    if kind == "Pod":
        default_pod(obj, rng)
    elif kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        _default_template(spec)
        strat = spec.setdefault("strategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        obj["spec"] = _ordered(
            spec,
            [
                "replicas",
                "selector",
                "template",
                "strategy",
                "minReadySeconds",
                "revisionHistoryLimit",
                "paused",
                "progressDeadlineSeconds",
            ],
        )
        obj.setdefault("status", {})
    elif kind == "ReplicaSet" or kind == "ReplicationController":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        _default_template(spec)
        obj.setdefault("status", {"replicas": 0})
    elif kind == "StatefulSet":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        _default_template(spec)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault(
            "updateStrategy",
            {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault(
            "persistentVolumeClaimRetentionPolicy",
            {"whenDeleted": "Retain", "whenScaled": "Retain"},
        )
        obj.setdefault("status", {"replicas": 0, "availableReplicas": 0})
    elif kind == "DaemonSet":
        spec = obj.setdefault("spec", {})
        _default_template(spec)
        spec.setdefault(
            "updateStrategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
        )
        spec.setdefault("revisionHistoryLimit", 10)
        obj.setdefault(
            "status",
            {
                "currentNumberScheduled": 0,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": 0,
                "numberReady": 0,
            },
        )
    elif kind == "Job" and isinstance(spec, dict):
        _default_template(spec)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        obj.setdefault("status", {})
    elif kind == "Service":
        spec = obj.setdefault("spec", {})
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") != "None" and spec["type"] != "ExternalName":
            if not spec.get("clusterIP"):
                r = rng or random
                spec["clusterIP"] = f"10.96.{r.randint(0, 255)}.{r.randint(1, 254)}"
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("sessionAffinity", "None")
        obj.setdefault("status", {"loadBalancer": {}})
    elif kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        labels = obj["metadata"].setdefault("labels", {})
        labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])
    elif kind == "Node":
        obj.setdefault("spec", {})
        obj.setdefault("status", {"daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}})
    elif kind == "PersistentVolumeClaim":
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {"phase": "Pending"})
    elif kind == "PersistentVolume":
        spec = obj.setdefault("spec", {})
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {"phase": "Pending"})
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "HorizontalPodAutoscaler":
        obj.setdefault("status", {"desiredReplicas": 0, "currentMetrics": None})
    elif kind == "PodDisruptionBudget":
        obj.setdefault(
            "status",
            {
                "disruptionsAllowed": 0,
                "currentHealthy": 0,
                "desiredHealthy": 0,
                "expectedPods": 0,
            },
        )
    elif kind == "StorageClass":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")
    elif kind == "Ingress":
        obj.setdefault("status", {"loadBalancer": {}})


# ------------------------------------------------------------------ validation


def validate(rt: ResourceType, obj: dict) -> list[tuple[str, str, str]]:
    """Return causes as (reason, field, message)."""
    causes: list[tuple[str, str, str]] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        causes.append(
            (
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        )
    elif rt.kind != "Event" and (len(name) > 253 or not _DNS1123.match(name)):
        causes.append(
            (
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )
        )
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if rt.kind in ("Deployment", "ReplicaSet", "StatefulSet", "ReplicationController"):
        reps = spec.get("replicas")
        if isinstance(reps, int) and reps < 0:
            causes.append(
                (
                    "FieldValueInvalid",
                    "spec.replicas",
                    f"Invalid value: {reps}: must be greater than or equal to 0",
                )
            )
    if rt.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        sel = spec.get("selector")
        if not sel:
            causes.append(("FieldValueRequired", "spec.selector", "Required value"))
        else:
            labels = ((spec.get("template") or {}).get("metadata") or {}).get(
                "labels"
            ) or {}
            ml = sel.get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in ml.items()):
                shown = (
                    "map[string]string{"
                    + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
                    + "}"
                )
                causes.append(
                    (
                        "FieldValueInvalid",
                        "spec.template.metadata.labels",
                        f"Invalid value: {shown}: `selector` does not match template `labels`",
                    )
                )
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        causes += _validate_containers(pod_spec, "spec.template.spec")
    if rt.kind == "Pod":
        causes += _validate_containers(spec, "spec")
    return causes


def _validate_containers(pod_spec: dict, prefix: str) -> list[tuple[str, str, str]]:
    causes = []
    containers = pod_spec.get("containers") or []
    if not containers:
        causes.append(("FieldValueRequired", f"{prefix}.containers", "Required value"))
    for i, c in enumerate(containers):
        if not c.get("name"):
            causes.append(
                (
                    "FieldValueRequired",
                    f"{prefix}.containers[{i}].name",
                    "Required value",
                )
            )
        if not c.get("image"):
            causes.append(
                (
                    "FieldValueRequired",
                    f"{prefix}.containers[{i}].image",
                    "Required value",
                )
            )
    return causes


def label_selector_string(sel: dict | None) -> str:
    if not sel:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator")
        vals = ",".join(sorted(e.get("values") or []))
        if op == "In":
            parts.append(f"{e['key']} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{e['key']} notin ({vals})")
        elif op == "Exists":
            parts.append(e["key"])
        elif op == "DoesNotExist":
            parts.append("!" + e["key"])
    return ",".join(parts)


def match_label_selector_obj(sel: dict | None, labels: dict) -> bool:
    """Match a metav1.LabelSelector (matchLabels/matchExpressions) against labels."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
