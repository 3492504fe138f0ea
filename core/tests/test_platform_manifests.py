"""platform/: container image, compose file, Kubernetes manifests, checked statically.

No Docker engine or Kubernetes API runs here, so:

- the kustomizations are rendered by a small pure-Python kustomize (resources,
  components, strategic-merge patches, namespace, images: all these overlays use) and,
  when kubectl is installed, compared with ``kubectl kustomize``;
- every rendered object is validated against the OpenAPI schema the ``kubernetes``
  client ships: each document is built into its model class (V1Deployment, ...),
  rejecting unknown fields and wrong types, with the client's own required-field and
  enum checks;
- then the invariants: probes, non-root, HPA target, PDB selection, RBAC verbs, the
  Dockerfile's stages and user, the entrypoint's mapping to the Procfile.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import models as k8s_models
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform"
KUBE = PLATFORM / "kubernetes"
OVERLAYS = ["production", "dev", "keda", "cluster-actions"]
NAMESPACES = {
    "production": "slipway",
    "dev": "slipway-dev",
    "keda": "slipway",
    "cluster-actions": "slipway",
}
SLIPWAY_IMAGES = {
    "production": "registry.example.com/slipway/slipway:1.0.0",
    "dev": "slipway:dev",
    "keda": "registry.example.com/slipway/slipway:1.0.0",
    "cluster-actions": "registry.example.com/slipway/slipway:1.0.0",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
}
READ_VERBS = {"get", "list", "watch"}
Obj = dict[str, Any]


# --- a small kustomize ------------------------------------------------------------

KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "patches",
    "images",
}
# Strategic-merge keys of the lists these patches touch; other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
}


def load_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            for index, existing in enumerate(merged_list):
                if existing.get(key) == item.get(key):
                    merged_list[index] = strategic_merge(existing, item)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _matches(obj: Obj, patch: Obj, target: Obj | None) -> bool:
    if target:
        return (
            target.get("kind") in (None, obj["kind"])
            and target.get("group") in (None, _group(obj["apiVersion"]))
            and (
                "name" not in target
                or re.fullmatch(target["name"], obj["metadata"]["name"]) is not None
            )
        )
    return (
        obj["kind"] == patch["kind"]
        and _group(obj["apiVersion"]) == _group(patch["apiVersion"])
        and obj["metadata"]["name"] == patch["metadata"]["name"]
    )


def apply_patches(resources: list[Obj], kustomization: Obj, directory: Path) -> None:
    for entry in kustomization.get("patches", []):
        assert set(entry) <= {"path", "patch", "target"}, entry
        text = (
            (directory / entry["path"]).read_text()
            if "path" in entry
            else entry["patch"]
        )
        for patch in (doc for doc in yaml.safe_load_all(text) if doc is not None):
            assert isinstance(patch, dict), "only strategic-merge patches are used"
            hits = [
                index
                for index, obj in enumerate(resources)
                if _matches(obj, patch, entry.get("target"))
            ]
            assert hits, f"patch matches nothing: {directory}: {patch['metadata']}"
            if patch.get("$patch") == "delete":
                for index in reversed(hits):
                    del resources[index]
                continue
            for index in hits:
                resources[index] = strategic_merge(resources[index], patch)


def _pod_specs(obj: Obj) -> Iterable[Obj]:
    spec = obj.get("spec", {})
    if "template" in spec:
        yield spec["template"]["spec"]
    if "jobTemplate" in spec:
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def apply_images(resources: list[Obj], images: list[Obj]) -> None:
    for obj in resources:
        for pod in _pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                for image in images:
                    if image["name"] == name:
                        name = image.get("newName", name)
                        tag = str(image.get("newTag", tag))
                container["image"] = f"{name}:{tag}" if tag else name


def apply_namespace(resources: list[Obj], namespace: str) -> None:
    for obj in resources:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            for subject in obj.get("subjects", []):
                if subject["kind"] == "ServiceAccount" and subject.get("namespace") in (
                    None,
                    "",
                    "default",
                ):
                    subject["namespace"] = namespace


def render(directory: Path, resources: list[Obj] | None = None) -> list[Obj]:
    """Render a Kustomization (or apply a Component to RESOURCES)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: keep kustomizations simple, not {unknown}"
    resources = [] if resources is None else resources
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory}: missing resource {entry}"
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(load_docs(path))
    for entry in kustomization.get("components", []):
        component = (directory / entry).resolve()
        head = yaml.safe_load((component / "kustomization.yaml").read_text())
        assert head["kind"] == "Component", component
        resources = render(component, resources)
    apply_patches(resources, kustomization, directory)
    if "namespace" in kustomization:
        apply_namespace(resources, kustomization["namespace"])
    if "images" in kustomization:
        apply_images(resources, kustomization["images"])
    return resources


def _key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: render(KUBE / "overlays" / overlay) for overlay in OVERLAYS}


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


# --- the schema the kubernetes client ships ------------------------------------------

_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "bytes": str,
    "object": object,
    "datetime": str,
    "date": str,
}
_LIST = re.compile(r"^(?:List\[|list\[)(.*)\]$")
_DICT = re.compile(r"^(?:Dict\[|dict\()str, (.*)[\])]$")


def model_class(api_version: str, kind: str) -> type | None:
    version = api_version.rpartition("/")[2]
    return getattr(k8s_models, version[:1].upper() + version[1:] + kind, None)


def walk(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    """Check VALUE against the client's TYPE_NAME: no unknown field, right shapes."""
    if value is None:
        return
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            walk(item, match.group(1), f"{path}[{index}]", errors)
        return
    if match := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            walk(item, match.group(1), f"{path}.{key}", errors)
        return
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        wrong_bool = isinstance(value, bool) and type_name in {"int", "float", "str"}
        if wrong_bool or not isinstance(value, expected):
            errors.append(f"{path}: expected {type_name}, got {value!r}")
        return
    cls = getattr(k8s_models, type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected {type_name} (a map), got {value!r}")
        return
    fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}: unknown field {key!r} in {type_name}")
            continue
        walk(item, cls.openapi_types[fields[key]], f"{path}.{key}", errors)


def validate_model(value: Obj, type_name: str, path: str) -> list[str]:
    """Unknown fields (walk), then the client's own strict model validation
    (types, required fields) by building the object with from_dict."""
    errors: list[str] = []
    walk(value, type_name, path, errors)
    try:
        getattr(k8s_models, type_name).from_dict(value)
    except (ValidationError, TypeError, ValueError) as exc:
        errors.append(f"{path}: {type_name}: {exc}")
    return errors


def schema_errors(obj: Obj) -> list[str]:
    cls = model_class(obj["apiVersion"], obj["kind"])
    assert cls is not None, f"no client model for {obj['apiVersion']} {obj['kind']}"
    path = f"{obj['kind']}/{obj['metadata']['name']}"
    return validate_model(obj, cls.__name__, path)


def test_validator_rejects_what_the_schema_rejects() -> None:
    good = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    assert schema_errors(good) == []
    typo = copy.deepcopy(good)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert "unknown field 'imagePullPolicyy'" in "\n".join(schema_errors(typo))
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicas"] = "two"
    assert "expected int" in "\n".join(schema_errors(wrong_type))
    missing = copy.deepcopy(good)
    del missing["spec"]["template"]["spec"]["containers"][0]["name"]
    assert "V1Container\nname\n" in "\n".join(schema_errors(missing))
    bad_list = copy.deepcopy(good)
    bad_list["spec"]["template"]["spec"]["containers"] = {"name": "c"}
    assert "expected a list" in "\n".join(schema_errors(bad_list))


# --- every file parses; every object validates ----------------------------------------


def test_every_manifest_file_parses() -> None:
    files = sorted(KUBE.rglob("*.yaml"))
    assert len(files) > 15
    for path in files:
        docs = load_docs(path)
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc, path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_the_kubernetes_schema(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    keys = [_key(obj) for obj in objects]
    assert len(keys) == len(set(keys)), "duplicate objects"
    errors = []
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked in test_keda_component
        errors.extend(schema_errors(obj))
    assert errors == []


def test_standalone_files_match_the_schema() -> None:
    for path in [KUBE / "secret.example.yaml", *(KUBE / "base").glob("*.yaml")]:
        if path.name == "kustomization.yaml":
            continue
        for doc in load_docs(path):
            assert schema_errors(doc) == [], path


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_agrees(rendered: dict[str, list[Obj]], overlay: str) -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert done.returncode == 0, done.stderr
    theirs = sorted(yaml.safe_load_all(done.stdout), key=_key)
    ours = sorted(rendered[overlay], key=_key)
    assert [_key(o) for o in theirs] == [_key(o) for o in ours]
    for mine, kubectl_s in zip(ours, theirs, strict=True):
        assert mine == kubectl_s, _key(mine)


# --- invariants -----------------------------------------------------------------------


def slipway_pods(objects: list[Obj]) -> list[tuple[Obj, Obj]]:
    return [
        (obj, pod)
        for obj in objects
        if obj["kind"] in {"Deployment", "Job"}
        and obj["metadata"]["labels"].get("app.kubernetes.io/name") == "slipway"
        for pod in _pod_specs(obj)
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_slipway_pod_is_non_root_and_locked_down(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    pods = slipway_pods(rendered[overlay])
    components = {
        obj["metadata"]["labels"]["app.kubernetes.io/component"] for obj, _ in pods
    }
    assert components == {"web", "worker", "beat", "monitor", "migrate"}
    for obj, pod in pods:
        name = obj["metadata"]["name"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == 10001, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        volumes = {volume["name"] for volume in pod["volumes"]}
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] == SLIPWAY_IMAGES[overlay], name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert set(mounts.values()) <= volumes, name
            # Read-only root: Python and git write only to mounted volumes.
            assert "/tmp" in mounts and "/var/lib/slipway" in mounts, name
            assert mounts["/run/secrets/slipway"] == "secrets", name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name
            assert container["envFrom"] == [
                {"configMapRef": {"name": "slipway-config"}}
            ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_probes_service_pdb_and_ingress(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    web = find(objects, "Deployment", "slipway-web")
    pod_labels = web["spec"]["template"]["metadata"]["labels"]
    assert web["spec"]["replicas"] >= (2 if overlay != "dev" else 1)
    container = find_container(web, "web")
    assert container["args"] == ["web"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert port_names == {"http": 8000}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    # Probes reach the pod by IP: the pod's IP is an allowed host.
    env = {item["name"]: item for item in container["env"]}
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"

    pdb = find(objects, "PodDisruptionBudget", "slipway-web")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    for obj, _pod in slipway_pods(objects):
        if obj is not web:
            labels = (
                obj["spec"]["template"]["metadata"]["labels"]
                if "template" in obj["spec"]
                else {}
            )
            assert not selects(pdb["spec"]["selector"]["matchLabels"], labels)

    service = find(objects, "Service", "slipway-web")
    assert selects(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = find(objects, "Ingress", "slipway")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "slipway-web", "port": {"name": "http"}}


def test_probe_paths_are_routed() -> None:
    from django.urls import resolve

    assert resolve("/healthz").url_name == "healthz"
    assert resolve("/readyz").url_name == "readyz"


def find_container(obj: Obj, name: str) -> Obj:
    (pod,) = _pod_specs(obj)
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    return container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("overlay", ["production", "dev", "cluster-actions"])
def test_hpa_scales_the_worker(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    worker = find(objects, "Deployment", "slipway-worker")
    assert "replicas" not in worker["spec"], "the HPA owns the replica count"
    assert find_container(worker, "worker")["args"] == ["worker"]
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "slipway-worker",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 70,
    }
    expected = (1, 3) if overlay == "dev" else (2, 20)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == expected
    # CPU utilisation is relative to the request: the worker must have one.
    assert find_container(worker, "worker")["resources"]["requests"]["cpu"]


def test_keda_component(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["keda"]
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    scaled = find(objects, "ScaledObject", "slipway-worker")
    assert scaled["metadata"]["namespace"] == "slipway"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "slipway-worker"
    find(objects, "Deployment", spec["scaleTargetRef"]["name"])
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 20)
    redis = [t for t in spec["triggers"] if t["type"] == "redis"]
    assert redis[0]["metadata"]["listName"] == "default"
    assert isinstance(redis[0]["metadata"]["listLength"], str)
    auth = find(objects, "TriggerAuthentication", "slipway-keda-redis")
    assert redis[0]["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "advanced",
        "triggers",
    }
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert validate_model(behavior, "V2HorizontalPodAutoscalerBehavior", "b") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_beat_is_single_and_monitor_present(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    beat = find(objects, "Deployment", "slipway-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    monitor = find(objects, "Deployment", "slipway-monitor")
    assert find_container(monitor, "monitor")["args"] == ["monitor"]
    job = find(objects, "Job", "slipway-migrate")
    assert find_container(job, "migrate")["args"] == ["migrate"]
    for name in ("web", "worker", "beat", "monitor"):
        deployment = find(objects, "Deployment", f"slipway-{name}")
        (pod,) = _pod_specs(deployment)
        assert [c["args"] for c in pod["initContainers"]] == [["wait-migrations"]]


def _rules(role: Obj) -> list[tuple[str, str, str]]:
    return [
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_read_only_by_default(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    namespace = NAMESPACES[overlay]
    account = find(objects, "ServiceAccount", "slipway")
    assert account["metadata"]["namespace"] == namespace
    read = find(objects, "ClusterRole", "slipway-read")
    granted = _rules(read)
    for group, resource, verb in granted:
        assert "*" not in (group, resource, verb)
        assert resource != "secrets"
        if verb not in READ_VERBS:
            assert (group, verb) == ("authorization.k8s.io", "create")
            assert resource in {"selfsubjectrulesreviews", "selfsubjectaccessreviews"}
    needed = {
        ("", "nodes"),
        ("", "pods"),
        ("", "pods/log"),
        ("", "services"),
        ("", "endpoints"),
        ("", "events"),
        ("", "namespaces"),
        ("", "persistentvolumes"),
        ("", "persistentvolumeclaims"),
        ("", "configmaps"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("networking.k8s.io", "ingresses"),
        ("storage.k8s.io", "storageclasses"),
        ("events.k8s.io", "events"),
    }
    for group, resource in needed:
        for verb in READ_VERBS:
            assert (group, resource, verb) in granted, (group, resource, verb)
    for resource in ("nodes", "pods"):
        assert ("metrics.k8s.io", resource, "list") in granted
    assert ("authorization.k8s.io", "selfsubjectrulesreviews", "create") in granted

    bindings = of_kind(objects, "ClusterRoleBinding")
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "slipway", "namespace": namespace}
        ]
        find(objects, "ClusterRole", binding["roleRef"]["name"])
    writes = {b["roleRef"]["name"] for b in bindings} - {"slipway-read"}
    assert writes == (
        {"slipway-cluster-actions"} if overlay == "cluster-actions" else set()
    )


def test_cluster_actions_grant_the_write_verbs(rendered: dict[str, list[Obj]]) -> None:
    granted = set(
        _rules(
            find(rendered["cluster-actions"], "ClusterRole", "slipway-cluster-actions")
        )
    )
    for needed in [
        ("apps", "deployments/scale", "patch"),
        ("apps", "statefulsets/scale", "patch"),
        ("", "pods", "delete"),
        ("", "pods/eviction", "create"),
        ("", "nodes", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "update"),
        ("autoscaling", "horizontalpodautoscalers", "patch"),
        # Server-side apply: PATCH, plus CREATE for new objects.
        ("apps", "deployments", "patch"),
        ("apps", "deployments", "create"),
        ("", "services", "patch"),
        ("", "configmaps", "patch"),
    ]:
        assert needed in granted, needed
    assert not [g for g in granted if "*" in g or g[1] == "secrets"]
    assert not [g for g in granted if g[2] in {"escalate", "bind", "impersonate"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # Created out of band (docs/deploy.md): the production secrets and TLS cert.
    external = {("Secret", "slipway-secrets"), ("Secret", "slipway-tls")}
    if overlay == "keda":
        external.add(("Secret", "slipway-keda-redis"))
    namespace = NAMESPACES[overlay]
    assert ("Namespace", namespace) in names
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == namespace, _key(obj)
    for obj in objects:
        for pod in _pod_specs(obj):
            if "serviceAccountName" in pod:
                assert ("ServiceAccount", pod["serviceAccountName"]) in names
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    ref = ("Secret", volume["secret"]["secretName"])
                    assert ref in names or ref in external, ref
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in names
            for container in pod["containers"] + pod.get("initContainers", []):
                for source in container.get("envFrom", []):
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
    if overlay == "dev":
        assert ("Secret", "slipway-secrets") in names


def test_configmap_files_match_the_secret_template() -> None:
    (config,) = load_docs(KUBE / "base" / "configmap.yaml")
    (secret,) = load_docs(KUBE / "secret.example.yaml")
    (dev_secret,) = load_docs(KUBE / "overlays" / "dev" / "secret.yaml")
    files = {
        key[: -len("_FILE")]: value
        for key, value in config["data"].items()
        if key.endswith("_FILE")
    }
    assert set(files) == set(secret["stringData"]) == set(dev_secret["stringData"])
    for name, path in files.items():
        assert path == f"/run/secrets/slipway/{name}"
    # Settings that hold secrets never sit in the ConfigMap itself.
    assert not set(config["data"]) & set(secret["stringData"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_forwarded_headers_are_trusted_from_named_addresses_only(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    """Never "*": any pod reaching port 8000 could set its own X-Forwarded-For."""
    import ipaddress

    config = find(rendered[overlay], "ConfigMap", "slipway-config")["data"]
    entries = [e.strip() for e in config["FORWARDED_ALLOW_IPS"].split(",")]
    assert entries and "*" not in entries
    networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
    # Nothing that covers every address either.
    assert all(network.prefixlen > 0 for network in networks)
    (base,) = load_docs(KUBE / "base" / "configmap.yaml")
    base_networks = [
        ipaddress.ip_network(e.strip())
        for e in base["data"]["FORWARDED_ALLOW_IPS"].split(",")
    ]
    assert all(network.is_loopback for network in base_networks)


@pytest.mark.parametrize("overlay", ["production", "dev"])
def test_settings_load_from_the_rendered_config(
    rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path
) -> None:
    """The ConfigMap plus the Secret as files: Django starts (manage.py check)."""
    objects = rendered[overlay]
    config = dict(find(objects, "ConfigMap", "slipway-config")["data"])
    if overlay == "dev":
        values = find(objects, "Secret", "slipway-secrets")["stringData"]
    else:
        from cryptography.fernet import Fernet

        values = {
            "SECRET_KEY": "k" * 50,
            "SLIPWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "REDIS_URL": "redis://redis.example.internal:6379/0",
            "SLIPWAY_METRICS_TOKEN": "",
        }
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in values.items():
        (secrets_dir / key).write_text(value)
    (secrets_dir / "DATABASE_URL").write_text(f"sqlite:///{tmp_path}/db.sqlite3")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLIPWAY_", "SECRET_KEY", "DATABASE_", "REDIS_"))
        and key not in {"DEBUG", "ALLOWED_HOSTS", "CELERY_BROKER_URL"}
    }
    for key, value in config.items():
        env[key] = value.replace("/run/secrets/slipway", str(secrets_dir))
    env["SLIPWAY_VAR_DIR"] = str(tmp_path / "var")
    env["SLIPWAY_MEDIA_ROOT"] = str(tmp_path / "var" / "media")
    web = find(objects, "Deployment", "slipway-web")
    allowed = {e["name"]: e for e in find_container(web, "web")["env"]}["ALLOWED_HOSTS"]
    env["ALLOWED_HOSTS"] = (
        allowed["value"]
        .replace("$(SLIPWAY_ALLOWED_HOSTS)", config["SLIPWAY_ALLOWED_HOSTS"])
        .replace("$(POD_IP)", "10.1.2.3")
    )
    code = (
        "import django, json; from django.conf import settings; django.setup();"
        "print(json.dumps([settings.DEBUG, settings.REDIS_URL, settings.ALLOWED_HOSTS,"
        " settings.SLIPWAY['METRICS_TOKEN']]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    debug, redis_url, hosts, metrics_token = json.loads(done.stdout)
    assert debug is (overlay == "dev")
    assert redis_url == values["REDIS_URL"]
    assert metrics_token == values["SLIPWAY_METRICS_TOKEN"]
    assert {"10.1.2.3", "localhost"} <= set(hosts)
    assert config["SLIPWAY_ALLOWED_HOSTS"].split(",")[0] in hosts


# --- Dockerfile, entrypoint, compose ----------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (PLATFORM / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    instructions = dockerfile_instructions()
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for word, rest in instructions
        if word == "ARG" and "=" in rest
    }
    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert len(stages) >= 2
    froms = [instructions[i][1] for i in stages]
    assert froms[0].endswith(" AS builder")
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    final = instructions[stages[-1] :]
    words = [word for word, _ in final]
    assert any(word == "COPY" and "--from=builder" in rest for word, rest in final), (
        "the runtime stage copies the builder's virtualenv"
    )
    # Non-root: a numeric USER (so runAsNonRoot can verify it), after every RUN.
    users = [rest for word, rest in final if word == "USER"]
    assert len(users) == 1
    uid = users[0].split(":")[0].replace("${SLIPWAY_UID}", args["SLIPWAY_UID"])
    assert uid.isdigit() and int(uid) != 0 and int(uid) == 10001
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert "manage.py collectstatic" in runs
    assert "useradd" in runs and "tini" in runs and "git" in runs
    assert "HEALTHCHECK" in words
    assert "EXPOSE" in words and ("EXPOSE", "8000") in final
    (entrypoint,) = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert "docker-entrypoint.sh" in entrypoint and "tini" in entrypoint
    assert ("CMD", '["web"]') in final


def test_dockerfile_bakes_no_secret() -> None:
    for word, rest in dockerfile_instructions():
        if word in {"ENV", "ARG", "LABEL"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest)
            for name in names:
                assert not re.search(
                    r"SECRET|KEY|TOKEN|PASSWORD|DATABASE_URL|REDIS_URL", name
                ), f"{word} {name} would be baked into the image"
        if word == "RUN" and "SECRET_KEY" in rest:
            # Made up for collectstatic only, inside this one command.
            assert "secrets.token_urlsafe" in rest and "Fernet.generate_key" in rest
        if word in {"COPY", "ADD"}:
            assert not re.search(r"\.env\b|var/|kubeconfig", rest), rest


def test_dockerfile_copies_every_app() -> None:
    from django.conf import settings

    sources = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from" not in rest:
            sources.update(rest.split()[:-1])
    local_apps = {app for app in settings.INSTALLED_APPS if (ROOT / app).is_dir()}
    for needed in local_apps | {"config", "templates", "static", "manage.py"}:
        assert needed in sources, needed
    assert {"platform/Procfile", "platform/docker-entrypoint.sh"} <= sources
    assert "." not in sources, "copy an explicit list, not the whole context"


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = (PLATFORM / "Dockerfile.dockerignore").read_text().splitlines()
    entries = {line.strip() for line in ignore if line.strip() and line[0] != "#"}
    assert {".git", ".venv", "var", "*.env", "**/*.env", "**/__pycache__"} <= entries


def run_entrypoint(
    tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run docker-entrypoint.sh with stub uvicorn/celery/python that record argv."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    record = tmp_path / "argv.txt"
    for name in ("uvicorn", "celery", "python"):
        stub = stubs / name
        stub.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{record}"\nexit 0\n'
        )
        stub.chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "SLIPWAY_APP_DIR": str(ROOT),
        "SLIPWAY_VAR_DIR": str(tmp_path / "var"),
        "SLIPWAY_COLLECTED_STATIC": str(tmp_path / "collected"),
        "SLIPWAY_ROLE_FILE": str(tmp_path / "role"),
        "HOSTNAME": "pod-1",
        **(extra_env or {}),
    }
    (tmp_path / "collected").mkdir(exist_ok=True)
    done = subprocess.run(
        ["bash", str(PLATFORM / "docker-entrypoint.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = record.read_text().splitlines() if record.exists() else []
    record.unlink(missing_ok=True)
    return done, lines


# Every process role loads the settings first (one line naming a bad one, exit 2).
PREFLIGHT = "python -c from config.env import check_settings; check_settings()"


def test_entrypoint_maps_subcommands_to_the_procfile(tmp_path: Path) -> None:
    done, argv = run_entrypoint(tmp_path, "web")
    assert done.returncode == 0, done.stderr
    assert argv == [
        PREFLIGHT,
        "uvicorn config.asgi:application --host 0.0.0.0 --port 8000 "
        "--no-access-log --timeout-graceful-shutdown 5",
    ]
    assert (tmp_path / "var" / "staticfiles").resolve() == tmp_path / "collected"
    assert (tmp_path / "role").read_text().strip() == "web"

    done, argv = run_entrypoint(
        tmp_path,
        "worker",
        "--max-tasks-per-child",
        "100",
        extra_env={"SLIPWAY_QUEUES": "default,gpu"},
    )
    assert done.returncode == 0, done.stderr
    assert argv == [
        PREFLIGHT,
        "celery -A config worker -l INFO -Q default,gpu -c 4 -n worker-pod-1@%h "
        "--max-tasks-per-child 100",
    ]
    done, argv = run_entrypoint(tmp_path, "beat")
    assert argv == [
        PREFLIGHT,
        f"celery -A config beat -l INFO -s {tmp_path}/var/celerybeat-schedule",
    ]
    done, argv = run_entrypoint(tmp_path, "monitor")
    assert argv == [PREFLIGHT, "python manage.py monitor_clusters"]
    done, argv = run_entrypoint(tmp_path, "migrate")
    assert done.returncode == 0, done.stderr
    assert argv == [
        "python manage.py migrate --noinput",
        "python manage.py bootstrap --no-demo",
    ]
    done, argv = run_entrypoint(tmp_path, "manage", "createsuperuser")
    assert argv == ["python manage.py createsuperuser"]
    done, argv = run_entrypoint(tmp_path, "wait-migrations")
    assert done.returncode == 0
    assert argv == [PREFLIGHT, "python manage.py migrate --check"]


def test_entrypoint_healthcheck_is_role_aware(tmp_path: Path) -> None:
    def healthcheck() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(PLATFORM / "docker-entrypoint.sh"), "healthcheck"],
            env={
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                "SLIPWAY_APP_DIR": str(ROOT),
                "SLIPWAY_ROLE_FILE": str(tmp_path / "role"),
                "SLIPWAY_PORT": "1",  # nothing listens there
            },
            capture_output=True,
            text=True,
            timeout=30,
        )

    (tmp_path / "role").write_text("worker\n")
    assert healthcheck().returncode == 0
    (tmp_path / "role").write_text("web\n")
    failed = healthcheck()
    assert failed.returncode == 1 and "unhealthy" in failed.stderr


def test_every_procfile_process_has_a_subcommand() -> None:
    procfile = (PLATFORM / "Procfile").read_text()
    processes = {line.split(":", 1)[0] for line in procfile.splitlines() if line}
    entrypoint = (PLATFORM / "docker-entrypoint.sh").read_text()
    (case_line,) = [
        line
        for line in entrypoint.splitlines()
        if "web | worker" in line and not line.startswith("#")
    ]
    assert processes == {p.strip() for p in case_line.strip(" )").split("|")}


def test_compose_file() -> None:
    compose = yaml.safe_load((PLATFORM / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {
        "web",
        "worker",
        "beat",
        "monitor",
        "migrate",
        "postgres",
        "redis",
    }
    slipway = ["web", "worker", "beat", "monitor", "migrate"]
    images = {services[name]["image"] for name in slipway}
    assert len(images) == 1
    for name in slipway:
        service = services[name]
        assert service["build"] == {
            "context": "..",
            "dockerfile": "platform/Dockerfile",
        }
        assert service["env_file"] == [{"path": "slipway.env", "required": True}]
        assert service["command"][0] == name
        depends = service["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        if name != "migrate":
            assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["restart"] == "no"
    # Scalable: no fixed name or host port on workers.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert services["web"]["ports"] == ["${SLIPWAY_HTTP_PORT:-8000}:8000"]
    for name in ("web", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    # Artifacts: the same volume in web and worker.
    assert "media:/var/lib/slipway/media" in services["web"]["volumes"]
    assert "media:/var/lib/slipway/media" in services["worker"]["volumes"]


def test_env_example_names_every_secret() -> None:
    lines = (PLATFORM / "slipway.env.example").read_text().splitlines()
    values = dict(
        line.split("=", 1) for line in lines if line and not line.startswith("#")
    )
    for key in ("SECRET_KEY", "SLIPWAY_ENCRYPTION_KEY", "POSTGRES_PASSWORD"):
        assert values[key] == "CHANGE-ME", key
    assert ":CHANGE-ME@" in values["DATABASE_URL"]
    assert values["REDIS_URL"].startswith("redis://redis:")
    assert "@postgres:5432/" in values["DATABASE_URL"]
    assert "localhost" in values["ALLOWED_HOSTS"].split(",")
