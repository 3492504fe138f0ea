"""kube.py sends exactly kubectl's requests to the fake API server, and maps errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clusters import kube
from clusters.models import Cluster

from .factories import deployment, pod


@pytest.fixture
def backend(fake: Any) -> kube.KubeBackend:
    import yaml

    cluster = Cluster(
        name="t", auth_mode="kubeconfig", kubeconfig=yaml.safe_dump(fake.kubeconfig())
    )
    return kube.connect(cluster)


def last(fake: Any, method: str = "PATCH") -> Any:
    return [r for r in fake.requests if r.method == method][-1]


def ctype(req: Any) -> str:
    return req.headers.get("content-type") or req.headers.get("Content-Type", "")


def test_rollout_restart_sends_kubectls_strategic_merge_patch(fake, backend):
    fake.store.create(deployment("web"))
    backend.rollout_restart("deployments", "demo", "web")
    req = last(fake)
    assert req.path == "/apis/apps/v1/namespaces/demo/deployments/web"
    assert req.query == {"fieldManager": "kubectl-rollout"}
    assert ctype(req) == "application/strategic-merge-patch+json"
    body = req.json()
    stamp = body["spec"]["template"]["metadata"]["annotations"][kube.RESTARTED_AT]
    assert list(body) == ["spec"] and stamp.endswith("Z") and req.status == 200


def test_cordon_and_uncordon_patch_spec_unschedulable(fake, backend):
    backend.cordon("n1")
    req = last(fake)
    assert (req.path, req.query, ctype(req)) == (
        "/api/v1/nodes/n1",
        {},
        "application/strategic-merge-patch+json",
    )
    assert req.json() == {"spec": {"unschedulable": True}}
    assert fake.store.get("nodes", None, "n1")["spec"]["unschedulable"] is True
    backend.uncordon("n1")
    assert last(fake).json() == {"spec": {"unschedulable": None}}
    assert "unschedulable" not in fake.store.get("nodes", None, "n1")["spec"]


def test_scale_merge_patches_the_scale_subresource(fake, backend):
    fake.store.create(deployment("web"))
    backend.scale("deployments", "demo", "web", 4)
    req = last(fake)
    assert req.path == "/apis/apps/v1/namespaces/demo/deployments/web/scale"
    assert ctype(req) == "application/merge-patch+json"
    assert req.json() == {"spec": {"replicas": 4}}
    assert fake.store.get("deployments", "demo", "web")["spec"]["replicas"] == 4


def test_set_resources_merges_the_container_by_name(fake, backend):
    d = deployment("web")
    d["spec"]["template"]["spec"]["containers"].append(
        {"name": "sidecar", "image": "x"}
    )
    fake.store.create(d)
    backend.set_resources(
        "deployments", "demo", "web", "app", {"cpu": "250m"}, {"memory": "512Mi"}
    )
    req = last(fake)
    assert ctype(req) == "application/strategic-merge-patch+json"
    containers = fake.store.get("deployments", "demo", "web")["spec"]["template"][
        "spec"
    ]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["resources"] == {
        "requests": {"cpu": "250m"},
        "limits": {"memory": "512Mi"},
    }


def test_drain_evicts_and_reports_pods_a_pdb_protects(fake, backend):
    owner = {"kind": "ReplicaSet", "name": "api-1"}
    fake.store.create(pod("api-a", node_name="n1", labels={"app": "api"}, owner=owner))
    fake.store.create(pod("api-b", node_name="n1", labels={"app": "api"}, owner=owner))
    fake.store.create(
        pod("ds-x", node_name="n1", owner={"kind": "DaemonSet", "name": "ds"})
    )
    fake.store.create(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "api-pdb", "namespace": "demo"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}},
        }
    )
    result = backend.drain("n1")
    evictions = [r for r in fake.requests if r.path.endswith("/eviction")]
    assert evictions, "drain must use the eviction API"
    req = evictions[0]
    assert req.method == "POST" and ctype(req) == "application/json"
    assert req.json() == {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": req.path.split("/")[-2], "namespace": "demo"},
    }
    assert {r.status for r in evictions} == {429}
    assert set(result.blocked) == {"demo/api-a", "demo/api-b"}
    assert "disruption budget" in next(iter(result.blocked.values())).lower()
    assert result.skipped == ["demo/ds-x"]
    assert fake.store.get("nodes", None, "n1")["spec"]["unschedulable"] is True


def test_apply_creates_then_conflicts_then_forces(fake, backend):
    doc = deployment("api")
    backend.apply(doc, field_manager="slipway")
    req = last(fake)
    assert ctype(req) == "application/apply-patch+yaml"
    assert req.query == {"fieldManager": "slipway"}
    backend.scale("deployments", "demo", "api", 5)  # Another manager owns replicas.
    doc["spec"]["replicas"] = 3
    with pytest.raises(kube.KubeError) as info:
        backend.apply(doc, field_manager="slipway")
    assert info.value.status == 409 and info.value.reason == "Conflict"
    assert any(c.get("field") == ".spec.replicas" for c in info.value.causes)
    backend.apply(doc, field_manager="slipway", force=True)
    assert last(fake).query == {"fieldManager": "slipway", "force": "true"}
    assert fake.store.get("deployments", "demo", "api")["spec"]["replicas"] == 3


def test_apply_yaml_applies_every_document(fake, backend):
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"
    )
    out = backend.apply_yaml(text, namespace="demo")
    assert [o["metadata"]["name"] for o in out] == ["a", "b"]
    assert fake.store.get("configmaps", "demo", "a")["data"] == {"x": "1"}


@pytest.mark.parametrize(
    ("setup", "status", "reason"),
    [
        ("bad-token", 401, "Unauthorized"),
        ("denied", 403, "Forbidden"),
        ("missing", 404, "NotFound"),
        ("duplicate", 409, "AlreadyExists"),
        ("invalid", 422, "Invalid"),
    ],
)
def test_api_errors_map_to_kube_error(fake, backend, setup, status, reason):
    import yaml

    if setup == "bad-token":
        cluster = Cluster(
            name="t",
            auth_mode="kubeconfig",
            kubeconfig=yaml.safe_dump(fake.kubeconfig(token="nope")),
        )
        call = lambda: kube.connect(cluster).list_pods()  # noqa: E731
    elif setup == "denied":
        token = fake.service_account_token("demo", "reader")
        cluster = Cluster(name="t", auth_mode="token", api_server=fake.url, token=token)
        call = lambda: kube.connect(cluster).list_pods("demo")  # noqa: E731
    elif setup == "missing":
        call = lambda: backend.get_object("deployments", "demo", "nope")  # noqa: E731
    elif setup == "duplicate":
        fake.store.create(deployment("dup"))
        call = lambda: backend.request(  # noqa: E731
            "POST",
            "/apis/apps/v1/namespaces/demo/deployments",
            body=deployment("dup"),
        )
    else:
        bad = deployment("bad", replicas=-1)
        call = lambda: backend.apply(bad)  # noqa: E731
    with pytest.raises(kube.KubeError) as info:
        call()
    assert info.value.status == status
    assert info.value.reason == reason
    if status == 403:
        assert str(info.value).startswith("the cluster refused: ")
        assert "cannot list resource" in str(info.value)


def test_unreachable_server_is_a_kube_error_with_status_0(fake, backend):
    fake.set_available(False)
    with pytest.raises(kube.KubeError) as info:
        backend.server_version()
    assert info.value.status == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not valid YAML"),
        ("just text", "not a kubeconfig"),
        (
            "contexts: [{name: x, context: {user: u}}]\n"
            "users: [{name: u, user: {exec: {command: /bin/sh}}}]\n",
            "would run a program",
        ),
    ],
)
def test_parse_kubeconfig_rejects_unsafe_or_bad_files(text, message):
    with pytest.raises(kube.CredentialsError, match=message):
        kube.parse_kubeconfig(text)


def test_pagination_follows_continue_tokens(fake, backend):
    for i in range(5):
        fake.store.create(pod(f"p{i}"))
    first = backend.list_pods(limit=2)
    assert len(first.items) == 2 and first.continue_token and first.remaining == 3
    assert len(list(backend.iter_objects("pods", page_size=2))) == 5
    lists = [r for r in fake.requests if r.path == "/api/v1/pods"]
    assert lists[-1].query.get("continue") and lists[-1].query.get("limit") == "2"


def test_server_side_selectors(fake, backend):
    fake.store.create(pod("web-1", labels={"app": "web"}, node_name="n1"))
    fake.store.create(pod("db-1", labels={"app": "db"}))
    assert [
        p["metadata"]["name"] for p in backend.list_pods(label_selector="app=web").items
    ] == ["web-1"]
    on_node = backend.list_pods(field_selector="spec.nodeName=n1").items
    assert [p["metadata"]["name"] for p in on_node] == ["web-1"]


FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kubernetes"


def test_parse_readyz_reads_the_recorded_answer_and_a_failing_check():
    recorded = json.loads((FIXTURES / "42-readyz-verbose.json").read_text())
    text = recorded["response"]["body"]
    checks = kube.parse_readyz(text)
    assert len(checks) == text.count("[+]") and all(ok for _, ok in checks)
    assert checks[0] == ("ping", True) and checks[-1] == ("shutdown", True)
    # As kube-apiserver words a failure (see the fixture's note).
    failing = text.replace(
        "[+]informer-sync ok", "[-]informer-sync failed: reason withheld"
    )
    assert dict(kube.parse_readyz(failing))["informer-sync"] is False
    assert kube.parse_readyz("ok") == []


def test_readyz_returns_the_checks_when_one_fails_with_500(fake, backend):
    assert ("informer-sync", True) in backend.readyz()
    fake.readyz_failures = {"informer-sync"}
    checks = backend.readyz()
    assert fake.requests[-1].status == 500 and fake.requests[-1].query == {
        "verbose": ""
    }
    assert dict(checks)["informer-sync"] is False
    assert [name for name, ok in checks if not ok] == ["informer-sync"]


def test_readyz_raises_when_the_server_cannot_answer(fake, backend):
    fake.set_available(False)
    with pytest.raises(kube.KubeError) as err:
        backend.readyz()
    assert err.value.status == 0


def test_delete_pod_sends_kubectls_delete_options(fake, backend):
    fake.store.create(pod("web-0"))
    backend.delete_pod("demo", "web-0")
    req = last(fake, "DELETE")
    assert req.path == "/api/v1/namespaces/demo/pods/web-0" and req.query == {}
    assert ctype(req) == "application/json"
    assert req.json() == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
    }
    with pytest.raises(kube.KubeError) as err:
        backend.delete_pod("demo", "web-0-gone")
    assert err.value.status == 404


def test_pod_logs_query_is_kubectl_logs(fake, backend):
    fake.store.create(pod("web-0", node_name="n1"))
    fake.set_pod_log("demo", "web-0", "a\nb\n")
    assert backend.pod_logs("demo", "web-0", tail=1) == "b\n"
    assert last(fake, "GET").query == {"tailLines": "1"}
    backend.pod_logs("demo", "web-0", "app", tail=None, timestamps=True)
    assert last(fake, "GET").query == {"container": "app", "timestamps": "true"}


def test_cluster_autoscaler_status_reads_its_configmap(fake, backend):
    assert backend.cluster_autoscaler_status() is None
    fake.store.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "cluster-autoscaler-status",
                "namespace": "kube-system",
            },
            "data": {"status": "Cluster-wide:\n  Health: Healthy\n"},
        }
    )
    assert backend.cluster_autoscaler_status() == "Cluster-wide:\n  Health: Healthy\n"
    req = last(fake, "GET")
    assert req.path == (
        "/api/v1/namespaces/kube-system/configmaps/cluster-autoscaler-status"
    )
    fake.add_rbac_denial(fake.token, "get", "configmaps")
    assert backend.cluster_autoscaler_status() is None


def test_vpa_recommendations_are_none_without_the_crds(fake, backend):
    assert backend.vpa_recommendations() is None
    assert [r.path for r in fake.requests] == ["/apis"]
