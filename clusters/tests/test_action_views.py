"""Deleting a pod and editing an HPA from the pages, pod logs, control-plane health
and the autoscaling extras: each through the views, against the fake API server.

Each action is checked by the request that reached the fake (what ``kubectl`` sends
for the same change), the role it needs, its confirmation prompt, its audit record,
and how a refusal by the cluster is shown.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from clusters import projection, snapshot
from clusters.fakekube import resources as fake_resources
from clusters.fakekube import server as fake_server
from core.models import AuditEvent

from .factories import deployment, make_cluster, pod

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_cached_cluster_reads():
    """Forget /readyz and autoscaling answers the views cached for an earlier test
    (cluster ids repeat between tests; the cache is Redis, not cleared by them)."""
    r = snapshot.client()
    for key in r.scan_iter(match="slipway:*:slipway:cluster:*", count=1000):
        r.delete(key)
    yield


def requests_to(fake, method: str, path: str) -> list:
    return [r for r in fake.requests if r.method == method and r.path == path]


def hpa(name: str = "web", namespace: str = "demo") -> dict:
    """Return the autoscaling/v2 HPA of the recorded fixture 38 (CPU 50 %, 2..10)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            },
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
    }


def mirror(fake, cluster, kind: str) -> None:
    """Copy the fake's objects of KIND into the snapshot, as the monitor would."""
    items = fake.store.list(kind)
    snapshot.write_objects(
        cluster.pk,
        kind,
        {projection.key_of(o): projection.project(kind, o) for o in items},
    )
    snapshot.client().hset(
        snapshot.state_key(cluster.pk),
        mapping={"stale": "0", "reachable": "1", "metrics": "none"},
    )


# ------------------------------------------------------------------- delete a pod


def test_operator_deletes_a_pod_with_kubectls_request_and_it_is_audited(
    client, olivia, fake
):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    client.force_login(olivia)
    back = reverse("clusters:pods", args=[cluster.pk]) + "?namespace=demo"
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "delete-pod"]),
        {"namespace": "demo", "name": "web-0", "next": back},
    )
    assert response.status_code == 302 and response["Location"] == back
    (req,) = requests_to(fake, "DELETE", "/api/v1/namespaces/demo/pods/web-0")
    # kubectl delete pod web-0 -n demo: DeleteOptions in the body, background
    # propagation, no grace period override (the pod's own applies).
    assert req.query == {}
    assert req.json() == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
    }
    assert req.status == 200
    stored = fake.store.get("pods", "demo", "web-0")
    # A pod on a node is deleted gracefully: Terminating until its kubelet stops it.
    assert stored is None or stored["metadata"].get("deletionTimestamp")
    event = AuditEvent.objects.get(action="cluster.delete-pod")
    assert event.actor == olivia and event.details["ok"] is True
    assert event.details["target"] == {"namespace": "demo", "name": "web-0"}
    page = client.get(back)
    assert b"Deleted pod demo/web-0." in page.content


@pytest.mark.parametrize("user", ["victor", "bob"])
def test_viewers_and_developers_cannot_delete_pods(client, fake, user, request):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    client.force_login(request.getfixturevalue(user))
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "delete-pod"]),
        {"namespace": "demo", "name": "web-0"},
    )
    assert response.status_code == 403
    assert not requests_to(fake, "DELETE", "/api/v1/namespaces/demo/pods/web-0")
    assert (
        fake.store.get("pods", "demo", "web-0")["metadata"].get("deletionTimestamp")
        is None
    )
    assert not AuditEvent.objects.filter(action="cluster.delete-pod").exists()


def test_a_pod_delete_the_cluster_forbids_is_shown_as_refused_and_audited(
    client, olivia, fake
):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    fake.add_rbac_denial(fake.token, "delete", "pods")
    client.force_login(olivia)
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "delete-pod"]),
        {"namespace": "demo", "name": "web-0"},
        follow=True,
    )
    (req,) = requests_to(fake, "DELETE", "/api/v1/namespaces/demo/pods/web-0")
    assert req.status == 403
    assert b"the cluster refused: " in response.content
    event = AuditEvent.objects.get(action="cluster.delete-pod")
    assert event.details["ok"] is False
    assert event.details["message"].startswith("the cluster refused: ")
    assert event.details["message"] in response.content.decode().replace("&quot;", '"')
    assert (
        fake.store.get("pods", "demo", "web-0")["metadata"].get("deletionTimestamp")
        is None
    )


def test_the_pods_page_asks_before_deleting_and_shows_no_delete_to_viewers(
    client, olivia, victor, fake
):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    mirror(fake, cluster, "pods")
    url = reverse("clusters:pods", args=[cluster.pk])
    client.force_login(olivia)
    page = client.get(url).content.decode()
    assert 'data-confirm="Delete pod __ns__/__name__?"' in page
    assert reverse("clusters:action", args=[cluster.pk, "delete-pod"]) in page
    client.force_login(victor)
    page = client.get(url).content.decode()
    assert "delete-pod" not in page and "Delete pod" not in page


# ------------------------------------------------------------------- edit an HPA


def test_operator_edits_an_hpa_with_a_merge_patch_and_it_is_audited(
    client, olivia, fake
):
    cluster = make_cluster(fake)
    fake.store.create(deployment("web"))
    fake.store.create(hpa())
    client.force_login(olivia)
    back = reverse("clusters:hpas", args=[cluster.pk])
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "edit-hpa"]),
        {
            "namespace": "demo",
            "name": "web",
            "min_replicas": "3",
            "max_replicas": "12",
            "cpu_target": "70",
            "next": back,
        },
    )
    assert response.status_code == 302 and response["Location"] == back
    path = "/apis/autoscaling/v2/namespaces/demo/horizontalpodautoscalers/web"
    (req,) = requests_to(fake, "PATCH", path)
    # kubectl patch hpa web -n demo --type=merge -p '{"spec": …}': a JSON merge
    # patch of spec; the metrics list is atomic, so it is sent whole.
    ctype = req.headers.get("content-type") or req.headers.get("Content-Type")
    assert ctype == "application/merge-patch+json"
    assert req.json() == {
        "spec": {
            "minReplicas": 3,
            "maxReplicas": 12,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        }
    }
    assert req.status == 200
    spec = fake.store.get("horizontalpodautoscalers", "demo", "web")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 12)
    assert spec["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert spec["scaleTargetRef"]["name"] == "web"
    event = AuditEvent.objects.get(action="cluster.edit-hpa")
    assert event.actor == olivia and event.details["ok"] is True
    assert event.details["params"]["min_replicas"] == "3"
    assert event.details["params"]["max_replicas"] == "12"
    assert event.details["params"]["cpu_target"] == "70"


def test_an_hpa_edit_without_a_cpu_target_keeps_the_metrics(client, olivia, fake):
    cluster = make_cluster(fake)
    fake.store.create(hpa())
    client.force_login(olivia)
    client.post(
        reverse("clusters:action", args=[cluster.pk, "edit-hpa"]),
        {"namespace": "demo", "name": "web", "min_replicas": "1", "max_replicas": "4"},
    )
    path = "/apis/autoscaling/v2/namespaces/demo/horizontalpodautoscalers/web"
    (req,) = requests_to(fake, "PATCH", path)
    assert req.json() == {"spec": {"minReplicas": 1, "maxReplicas": 4}}
    spec = fake.store.get("horizontalpodautoscalers", "demo", "web")["spec"]
    assert spec["metrics"][0]["resource"]["target"]["averageUtilization"] == 50


def test_an_hpa_edit_with_max_below_min_is_refused_before_the_cluster(
    client, olivia, fake
):
    cluster = make_cluster(fake)
    fake.store.create(hpa())
    client.force_login(olivia)
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "edit-hpa"]),
        {"namespace": "demo", "name": "web", "min_replicas": "5", "max_replicas": "2"},
        follow=True,
    )
    assert b"Need 1 &lt;= minReplicas &lt;= maxReplicas." in response.content
    assert not [r for r in fake.requests if r.method == "PATCH"]
    assert AuditEvent.objects.get(action="cluster.edit-hpa").details["ok"] is False


def test_viewers_cannot_edit_hpas(client, victor, fake):
    cluster = make_cluster(fake)
    fake.store.create(hpa())
    client.force_login(victor)
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "edit-hpa"]),
        {"namespace": "demo", "name": "web", "min_replicas": "3", "max_replicas": "9"},
    )
    assert response.status_code == 403
    assert not [r for r in fake.requests if r.method == "PATCH"]
    assert (
        fake.store.get("horizontalpodautoscalers", "demo", "web")["spec"]["minReplicas"]
        == 2
    )
    assert not AuditEvent.objects.filter(action="cluster.edit-hpa").exists()


def test_an_hpa_edit_the_cluster_forbids_is_shown_as_refused(client, olivia, fake):
    cluster = make_cluster(fake)
    fake.store.create(hpa())
    fake.add_rbac_denial(fake.token, "patch", "horizontalpodautoscalers")
    client.force_login(olivia)
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "edit-hpa"]),
        {"namespace": "demo", "name": "web", "min_replicas": "3", "max_replicas": "9"},
        follow=True,
    )
    assert b"the cluster refused: " in response.content
    assert AuditEvent.objects.get(action="cluster.edit-hpa").details["ok"] is False
    assert (
        fake.store.get("horizontalpodautoscalers", "demo", "web")["spec"]["minReplicas"]
        == 2
    )


def test_the_hpa_page_shows_the_edit_form_with_a_prompt_to_operators_only(
    client, olivia, victor, fake
):
    cluster = make_cluster(fake)
    fake.store.create(hpa())
    mirror(fake, cluster, "horizontalpodautoscalers")
    url = reverse("clusters:hpas", args=[cluster.pk])
    client.force_login(olivia)
    page = client.get(url).content.decode()
    assert 'data-confirm="Change HPA demo/web?"' in page
    assert 'name="min_replicas" min="1" value="2"' in page
    assert 'name="max_replicas" min="1" value="10"' in page
    assert 'name="cpu_target" min="1" max="1000" value="50"' in page
    client.force_login(victor)
    page = client.get(url).content.decode()
    assert "edit-hpa" not in page and 'name="min_replicas"' not in page
    assert "Deployment/web" in page


# ------------------------------------------------------------------- pod logs


def test_pod_log_text_returns_the_tail_and_follows_new_lines(client, victor, fake):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    fake.set_pod_log("demo", "web-0", "".join(f"line {i}\n" for i in range(10)))
    client.force_login(victor)
    url = reverse("clusters:pod-log-text", args=[cluster.pk, "demo", "web-0"])
    response = client.get(url, {"tail": "3"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"line 7\nline 8\nline 9\n"
    (req,) = requests_to(fake, "GET", "/api/v1/namespaces/demo/pods/web-0/log")
    assert req.query == {"tailLines": "3"}  # kubectl logs web-0 --tail=3
    # The page follows by asking again: what was written since is there.
    fake.append_pod_log("demo", "web-0", "line 10")
    assert client.get(url, {"tail": "3"}).content == b"line 8\nline 9\nline 10\n"


def test_pod_log_text_names_the_container_and_caps_the_tail(client, victor, fake):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    fake.set_pod_log("demo", "web-0", "from app\n", container="app")
    client.force_login(victor)
    url = reverse("clusters:pod-log-text", args=[cluster.pk, "demo", "web-0"])
    response = client.get(url, {"container": "app", "tail": "99999"})
    assert response.content == b"from app\n"
    req = requests_to(fake, "GET", "/api/v1/namespaces/demo/pods/web-0/log")[-1]
    assert req.query == {"container": "app", "tailLines": "5000"}


def test_pod_log_text_shows_what_the_cluster_refused(client, victor, fake):
    cluster = make_cluster(fake)
    fake.store.create(pod("web-0", node_name="n1"))
    fake.add_rbac_denial(fake.token, "get", "pods/log")
    client.force_login(victor)
    response = client.get(
        reverse("clusters:pod-log-text", args=[cluster.pk, "demo", "web-0"])
    )
    assert response.status_code == 403
    assert response.content.startswith(b"the cluster refused: ")


def test_pod_logs_page_offers_follow_and_the_containers(client, victor, fake):
    cluster = make_cluster(fake)
    manifest = pod("web-0", node_name="n1")
    manifest["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    fake.store.create(manifest)
    mirror(fake, cluster, "pods")
    client.force_login(victor)
    page = client.get(
        reverse("clusters:pod-logs", args=[cluster.pk, "demo", "web-0"]),
        {"container": "sidecar"},
    ).content.decode()
    text_url = reverse("clusters:pod-log-text", args=[cluster.pk, "demo", "web-0"])
    assert f'data-log-url="{text_url}?tail=1000&container=sidecar"' in page
    assert "data-log-follow checked" in page
    assert "<option selected>sidecar</option>" in page and "<option >app" in page


# ----------------------------------------------------------- control-plane health


def test_overview_shows_every_readyz_check_passing(client, victor, fake):
    cluster = make_cluster(fake)
    client.force_login(victor)
    page = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    checks = fake_resources.READYZ_VERBOSE.count("[+]")
    assert b"healthy" in page.content
    assert f"{checks} checks pass".encode() in page.content
    (req,) = requests_to(fake, "GET", "/readyz")
    assert "verbose" in req.query


def test_overview_names_a_failing_readyz_check(client, victor, fake):
    cluster = make_cluster(fake)
    fake.readyz_failures = {"informer-sync", "poststarthook/crd-informer-synced"}
    client.force_login(victor)
    page = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    (req,) = requests_to(fake, "GET", "/readyz")
    assert req.status == 500  # As kube-apiserver answers while a check fails.
    html = page.content.decode()
    assert "2 failing" in html
    assert "informer-sync, poststarthook/crd-informer-synced" in html
    assert page.context["readyz_error"] == ""
    assert dict(page.context["readyz"])["ping"] is True


def test_overview_says_when_readyz_cannot_be_read(client, victor, fake):
    cluster = make_cluster(fake)
    fake.set_available(False)
    client.force_login(victor)
    page = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    assert page.status_code == 200
    assert page.context["readyz_error"].startswith("cannot reach the cluster")
    assert "control plane (/readyz)" in page.content.decode()


# ------------------------------------------------------ VPA and Cluster Autoscaler

VPA_GROUP = "autoscaling.k8s.io"


@pytest.fixture
def vpa_crd(monkeypatch):
    """Serve verticalpodautoscalers.autoscaling.k8s.io/v1 from the fake, as a cluster
    with the VPA CRDs installed does (the fake's registry is its discovery)."""
    resource = {
        "resource": "verticalpodautoscalers",
        "responseKind": {"group": "", "version": "", "kind": "VerticalPodAutoscaler"},
        "scope": "Namespaced",
        "singularResource": "verticalpodautoscaler",
        "shortNames": ["vpa"],
        "verbs": [
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch",
        ],
        "subresources": [],
    }
    rt = fake_resources.ResourceType(
        group=VPA_GROUP,
        version="v1",
        plural="verticalpodautoscalers",
        kind="VerticalPodAutoscaler",
        namespaced=True,
        singular="verticalpodautoscaler",
        verbs=resource["verbs"],
        short_names=["vpa"],
    )
    group = {
        "metadata": {"name": VPA_GROUP},
        "versions": [
            {"version": "v1", "resources": [resource], "freshness": "Current"}
        ],
    }
    monkeypatch.setitem(
        fake_resources.REGISTRY, (VPA_GROUP, "v1", "verticalpodautoscalers"), rt
    )
    monkeypatch.setattr(
        fake_server, "NAMED_AGGREGATED", [*fake_server.NAMED_AGGREGATED, group]
    )
    return rt


def vpa(name: str, recommendation: list[dict] | None) -> dict:
    obj = {
        "apiVersion": f"{VPA_GROUP}/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "updatePolicy": {"updateMode": "Off"},
        },
    }
    if recommendation is not None:
        obj["status"] = {"recommendation": {"containerRecommendations": recommendation}}
    return obj


RECOMMENDATION = [
    {
        "containerName": "app",
        "lowerBound": {"cpu": "25m", "memory": "262144k"},
        "target": {"cpu": "50m", "memory": "262144k"},
        "uncappedTarget": {"cpu": "50m", "memory": "262144k"},
        "upperBound": {"cpu": "1349m", "memory": "1410936971"},
    }
]

CA_STATUS = """Cluster-autoscaler status at 2026-11-24 22:30:00.123 +0000 UTC:
Cluster-wide:
  Health:      Healthy (ready=3 unready=0 notStarted=0 longNotStarted=0 registered=3)
  ScaleUp:     NoActivity (ready=3 registered=3)
  ScaleDown:   NoCandidates (candidates=0)
"""


def cluster_autoscaler_configmap() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cluster-autoscaler-status", "namespace": "kube-system"},
        "data": {"status": CA_STATUS},
    }


def test_autoscaling_page_shows_vpa_recommendations_and_autoscaler_status(
    client, victor, fake, vpa_crd
):
    cluster = make_cluster(fake)
    fake.store.create(vpa("web", RECOMMENDATION))
    fake.store.create(vpa("api", None))
    fake.store.create(cluster_autoscaler_configmap())
    client.force_login(victor)
    page = client.get(reverse("clusters:hpas", args=[cluster.pk]))
    html = page.content.decode()
    assert page.context["autoscaling"]["error"] == ""
    assert "<td>demo/web</td><td>Deployment/web</td><td>app</td>" in html
    assert "50m / 262144k" in html and "25m–1349m" in html
    assert "demo/api" in html and "No recommendation yet." in html
    assert "Health:      Healthy (ready=3" in html
    assert requests_to(fake, "GET", f"/apis/{VPA_GROUP}/v1/verticalpodautoscalers")[
        0
    ].query == {"limit": "500"}


def test_autoscaling_page_says_when_neither_is_installed(client, victor, fake):
    cluster = make_cluster(fake)
    client.force_login(victor)
    page = client.get(reverse("clusters:hpas", args=[cluster.pk]))
    assert page.context["autoscaling"] == {"vpa": None, "ca_status": None, "error": ""}
    assert b"The VPA CRDs are not installed." in page.content
    assert b"No cluster-autoscaler-status ConfigMap in kube-system." in page.content
    assert not requests_to(fake, "GET", f"/apis/{VPA_GROUP}/v1/verticalpodautoscalers")


def test_autoscaling_page_with_the_crds_but_no_vpas(client, victor, fake, vpa_crd):
    cluster = make_cluster(fake)
    client.force_login(victor)
    page = client.get(reverse("clusters:hpas", args=[cluster.pk]))
    assert page.context["autoscaling"]["vpa"] == []
    assert b"No VPAs." in page.content
