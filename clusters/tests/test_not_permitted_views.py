"""Pages say what the cluster refuses Slipway's identity, from the monitor's state:
a kind it may not list is "not permitted" (not an empty table), and so are
metrics the cluster refuses it (not "no metrics yet")."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clusters import projection, snapshot
from clusters.models import Cluster
from clusters.monitor import Settings
from clusters.views import KIND_LABELS
from clusters.watcher import ClusterWatcher
from core.models import AuditEvent

from .factories import make_cluster, pod

pytestmark = pytest.mark.django_db

SERVER = {"api_server": "http://127.0.0.1:9", "auth_mode": "token", "token": "t"}


def write_state(
    cluster: Cluster, refused: set[tuple[str, str | None]], metrics: str = "ok"
) -> None:
    """Write the state hash a watcher of CLUSTER writes when REFUSED streams got 403.

    The fields come from the watcher itself, so the pages read what the monitor
    really writes."""
    watcher = ClusterWatcher(cluster, None, None, Settings())
    watcher.forbidden = set(refused)
    watcher.synced = set(watcher.streams) - watcher.forbidden
    snapshot.client().hset(
        snapshot.state_key(cluster.pk),
        mapping={
            "reachable": "1",
            "error": "",
            "stale": "0",
            "metrics": metrics,
            **watcher._state_fields(),
        },
    )


def store_pods(cluster: Cluster, manifests: list[dict]) -> None:
    snapshot.write_objects(
        cluster.pk,
        "pods",
        {projection.key_of(m): projection.project("pods", m) for m in manifests},
    )


def test_the_labels_cover_every_watched_kind() -> None:
    assert set(KIND_LABELS) == set(projection.PROJECTIONS)


def test_pods_refused_in_one_namespace_say_so_and_the_others_show(client, victor):
    cluster = make_cluster(**SERVER, namespaces=["team-a", "team-b"])
    write_state(cluster, {("pods", "team-b")})
    store_pods(cluster, [pod("web-1", namespace="team-a")])
    client.force_login(victor)
    html = client.get(reverse("clusters:pods", args=[cluster.pk])).content.decode()
    assert 'data-not-permitted-kind="pods"' in html
    assert "may not list pods in team-b" in html
    assert "web-1" in html
    # Not stale: a refused stream is not a watch that is down.
    assert "data-stale-ribbon hidden" in html


def test_nodes_refused_across_the_cluster_show_not_permitted_not_an_empty_table(
    client, victor
):
    cluster = make_cluster(**SERVER, namespaces=["team-a"])
    write_state(cluster, {("nodes", None)})
    client.force_login(victor)
    html = client.get(reverse("clusters:nodes", args=[cluster.pk])).content.decode()
    assert "may not list nodes on this cluster" in html
    assert "Not permitted: the cluster's identity may not list nodes." in html
    assert "No nodes" not in html
    assert "data-stale-ribbon hidden" in html


def test_a_page_whose_kinds_are_permitted_shows_no_notice(client, victor):
    cluster = make_cluster(**SERVER, namespaces=["team-a"])
    write_state(cluster, {("nodes", None), ("storageclasses", None)})
    client.force_login(victor)
    html = client.get(reverse("clusters:events", args=[cluster.pk])).content.decode()
    assert "data-not-permitted" not in html and "No events." in html


def test_the_overview_lists_every_refused_kind_and_refused_metrics(
    client, victor, django_assert_max_num_queries
):
    cluster = make_cluster(**SERVER, namespaces=["team-a"])
    write_state(
        cluster,
        {("nodes", None), ("persistentvolumes", None), ("events", "team-a")},
        metrics="forbidden",
    )
    client.force_login(victor)
    with django_assert_max_num_queries(6):
        response = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    html = response.content.decode()
    assert "may not list nodes on this cluster" in html
    assert "may not list PersistentVolumes on this cluster" in html
    assert "may not list events in team-a" in html
    assert "metrics not permitted for this identity" in html
    assert "no metrics yet" not in html
    assert "Metrics are not permitted for this identity" in html  # The charts' card.


@pytest.mark.parametrize("name", ["nodes", "pods"])
def test_refused_metrics_on_the_usage_columns(client, victor, name):
    cluster = make_cluster(**SERVER)
    write_state(cluster, set(), metrics="forbidden")
    client.force_login(victor)
    html = client.get(reverse(f"clusters:{name}", args=[cluster.pk])).content.decode()
    assert "Metrics not permitted for this identity" in html
    assert "data-not-permitted" not in html


def test_creating_and_editing_a_cluster_audits_its_namespaces(client, alice):
    client.force_login(alice)
    form = {"name": "scoped", "monitored": "on", "verify_tls": "on", **SERVER}
    response = client.post(
        reverse("clusters:cluster-add"), {**form, "namespaces": "team-b, team-a"}
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    cluster = Cluster.objects.get(name="scoped")
    created = AuditEvent.objects.get(action="cluster.create")
    assert created.details["namespaces"] == ["team-a", "team-b"]
    response = client.post(
        reverse("clusters:cluster-edit", args=[cluster.pk]), {**form, "namespaces": ""}
    )
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="cluster.update").details["namespaces"] == []
