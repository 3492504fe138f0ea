"""Pages and actions: role matrix, audit, forms, bounded queries."""

from __future__ import annotations

import json

import pytest
import yaml
from django.urls import reverse

from clusters import snapshot
from clusters.models import Cluster
from core.models import AuditEvent

from .factories import deployment, make_cluster

pytestmark = pytest.mark.django_db


def seed_snapshot(cluster: Cluster, pods: int = 50) -> None:
    r = snapshot.client()
    # Through write_objects, as the monitor writes: the pods page reads the index.
    snapshot.write_objects(
        cluster.pk,
        "pods",
        {
            f"demo/p{i:04d}": {
                "name": f"p{i:04d}",
                "namespace": "demo",
                "phase": "Running",
                "ready": "1/1",
                "restarts": 0,
                "node": "n1",
                "containers": ["app"],
            }
            for i in range(pods)
        },
    )
    r.hset(
        snapshot.objects_key(cluster.pk, "nodes"),
        "n1",
        json.dumps(
            {
                "name": "n1",
                "status": "Ready",
                "cpu_alloc": 4000,
                "mem_alloc": 8 << 30,
                "roles": [],
                "problems": [],
                "taints": [],
            }
        ),
    )
    r.hset(
        snapshot.state_key(cluster.pk),
        mapping={"stale": "0", "reachable": "1", "metrics": "none"},
    )


@pytest.mark.parametrize(
    "name",
    [
        "cluster-detail",
        "nodes",
        "pods",
        "workloads",
        "services",
        "storage",
        "hpas",
        "events",
    ],
)
def test_pages_render_with_bounded_queries(
    client, victor, name, django_assert_max_num_queries
):
    cluster = make_cluster(
        api_server="http://127.0.0.1:9", auth_mode="token", token="t"
    )
    seed_snapshot(cluster)
    client.force_login(victor)
    with django_assert_max_num_queries(6):
        response = client.get(reverse(f"clusters:{name}", args=[cluster.pk]))
    assert response.status_code == 200


def test_pods_page_paginates_and_filters(client, victor):
    cluster = make_cluster(
        auth_mode="token", api_server="http://127.0.0.1:9", token="t"
    )
    seed_snapshot(cluster, pods=250)
    client.force_login(victor)
    page = client.get(reverse("clusters:pods", args=[cluster.pk]))
    assert page.content.count(b'<tr data-key="demo/') == 100
    found = client.get(reverse("clusters:pods", args=[cluster.pk]), {"q": "p0249"})
    assert found.content.count(b'<tr data-key="demo/') == 1
    assert b"metrics-server is not installed" in page.content


def test_viewer_sees_no_action_buttons_and_gets_403_on_post(client, victor, fake):
    cluster = make_cluster(fake)
    fake.store.create(deployment("web"))
    client.force_login(victor)
    page = client.get(reverse("clusters:nodes", args=[cluster.pk]))
    assert b"Cordon" not in page.content
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "scale"]),
        {"kind": "deployments", "namespace": "demo", "name": "web", "replicas": "3"},
    )
    assert response.status_code == 403
    assert fake.store.get("deployments", "demo", "web")["spec"]["replicas"] == 2
    assert not AuditEvent.objects.filter(action="cluster.scale").exists()


def test_actions_refuse_get(client, olivia, fake):
    cluster = make_cluster(fake)
    client.force_login(olivia)
    assert (
        client.get(reverse("clusters:action", args=[cluster.pk, "cordon"])).status_code
        == 405
    )


def test_operator_scales_and_the_action_is_audited(client, olivia, fake):
    cluster = make_cluster(fake)
    fake.store.create(deployment("web"))
    client.force_login(olivia)
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "scale"]),
        {
            "kind": "deployments",
            "namespace": "demo",
            "name": "web",
            "replicas": "3",
            "next": reverse("clusters:workloads", args=[cluster.pk]),
        },
    )
    assert response.status_code == 302
    assert fake.store.get("deployments", "demo", "web")["spec"]["replicas"] == 3
    event = AuditEvent.objects.get(action="cluster.scale")
    assert event.actor == olivia and event.details["ok"] is True
    assert event.details["target"]["name"] == "web"


def test_a_403_from_the_cluster_is_shown_as_refused_and_audited(client, olivia, fake):
    cluster = make_cluster(fake)
    fake.add_rbac_denial(fake.token, "patch", "nodes")
    client.force_login(olivia)
    response = client.post(
        reverse("clusters:action", args=[cluster.pk, "cordon"]),
        {"name": "n1"},
        follow=True,
    )
    assert b"the cluster refused: " in response.content
    event = AuditEvent.objects.get(action="cluster.cordon")
    assert event.details["ok"] is False


def test_operator_applies_yaml(client, olivia, fake):
    cluster = make_cluster(fake)
    client.force_login(olivia)
    response = client.post(
        reverse("clusters:apply", args=[cluster.pk]),
        {
            "yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\n",
            "namespace": "demo",
        },
    )
    assert response.status_code == 302
    assert fake.store.get("configmaps", "demo", "c1") is not None
    assert AuditEvent.objects.filter(action="cluster.apply").exists()


def test_add_cluster_form_rejects_a_bad_kubeconfig_clearly(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("clusters:cluster-add"),
        {
            "name": "prod",
            "auth_mode": "kubeconfig",
            "kubeconfig": "a: [",
            "verify_tls": "on",
        },
    )
    assert response.status_code == 200
    assert b"not valid YAML" in response.content
    assert not Cluster.objects.exists()


def test_add_cluster_form_rejects_an_unknown_context(client, alice, fake):
    client.force_login(alice)
    response = client.post(
        reverse("clusters:cluster-add"),
        {
            "name": "prod",
            "auth_mode": "kubeconfig",
            "kubeconfig": yaml.safe_dump(fake.kubeconfig()),
            "context": "nope",
        },
    )
    assert b"No context" in response.content and b"fakekube" in response.content


def test_admin_adds_a_cluster_with_encrypted_kubeconfig_and_tests_it(
    client, alice, fake
):
    client.force_login(alice)
    text = yaml.safe_dump(fake.kubeconfig())
    response = client.post(
        reverse("clusters:cluster-add"),
        {
            "name": "prod",
            "auth_mode": "kubeconfig",
            "kubeconfig": text,
            "context": "fakekube",
            "verify_tls": "on",
            "monitored": "on",
        },
    )
    cluster = Cluster.objects.get(name="prod")
    assert response.status_code == 302
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kubeconfig FROM clusters_cluster WHERE id = %s", [cluster.pk]
        )
        stored = cursor.fetchone()[0]
    assert "test-token" not in stored and cluster.kubeconfig == text.strip()
    result = client.post(reverse("clusters:cluster-test", args=[cluster.pk]))
    assert b"v1.36.2" in result.content and b"selfsubjectrulesreviews" in result.content


def test_non_admin_cannot_add_clusters(client, olivia):
    client.force_login(olivia)
    assert client.get(reverse("clusters:cluster-add")).status_code == 403


def test_user_without_role_gets_403(client, charlie):
    client.force_login(charlie)
    assert client.get(reverse("clusters:cluster-list")).status_code == 403


def test_yaml_view_and_logs(client, victor, fake):
    cluster = make_cluster(fake)
    fake.store.create(deployment("web"))
    client.force_login(victor)
    page = client.get(
        reverse("clusters:object-yaml", args=[cluster.pk, "deployments", "demo", "web"])
    )
    assert b"kind: Deployment" in page.content and b"managedFields" not in page.content
    missing = client.get(
        reverse(
            "clusters:object-yaml", args=[cluster.pk, "deployments", "demo", "nope"]
        )
    )
    assert missing.status_code == 404
