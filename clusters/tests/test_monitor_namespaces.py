"""A cluster that names namespaces: per-namespace list+watch for an identity that a
Role lets into those namespaces only, and cluster-wide kinds shown as not permitted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from asgiref.sync import sync_to_async
from django.urls import reverse

from clusters import snapshot
from clusters.fakekube import FakeKubeServer
from clusters.forms import ClusterForm
from clusters.models import Cluster
from clusters.monitor import WATCHED

from .factories import make_cluster, namespace, node, pod
from .test_monitor import Running, eventually, start_monitor

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "team-token"
USER = "team-user"
NAMESPACED = sorted(kind for kind, (_a, _b, one_ns) in WATCHED.items() if one_ns)
CLUSTER_SCOPED = sorted(
    kind for kind, (_a, _b, one_ns) in WATCHED.items() if not one_ns
)


@pytest.fixture
def team_fake() -> Iterator[FakeKubeServer]:
    """A fake cluster with namespaces team-a, team-b and other, a pod in each, and
    an identity whose Roles cover team-a and team-b only (no ClusterRole)."""
    with FakeKubeServer(bookmark_interval=1.0) as server:
        for ns in ("team-a", "team-b", "other"):
            server.store.create(namespace(ns))
            server.store.create(pod(f"{ns}-web", ns, node_name="n1"))
        server.store.create(node("n1"))
        server.add_token(TOKEN, USER)
        server.allow(USER, ["get", "list", "watch"], ["*"], namespace="team-a")
        # team-b's Role leaves out HPAs: refused in that namespace only.
        server.allow(
            USER,
            ["get", "list", "watch"],
            [k for k in NAMESPACED if k != "horizontalpodautoscalers"],
            namespace="team-b",
        )
        yield server


def make_team_cluster(server: FakeKubeServer) -> Cluster:
    return make_cluster(
        server,
        kubeconfig=yaml.safe_dump(server.kubeconfig(token=TOKEN)),
        namespaces=["team-a", "team-b"],
    )


@pytest.fixture
async def monitor() -> Any:
    running: Running = await start_monitor()
    yield running
    await running.close()


def state_of(cluster: Cluster) -> dict[str, str]:
    return snapshot.read_state(cluster.pk)


def fresh(cluster: Cluster) -> bool:
    """Return whether the monitor has listed every permitted stream and is not stale."""
    state = state_of(cluster)
    return state.get("stale") == "0" and state.get("synced:pods") == "1"


def pod_keys(cluster: Cluster) -> set[str]:
    return set(snapshot.read_objects(cluster.pk, "pods"))


async def test_namespaced_identity_is_watched_per_namespace_and_never_sees_others(
    team_fake: FakeKubeServer, monitor: Running
) -> None:
    cluster = await sync_to_async(make_team_cluster)(team_fake)
    await eventually(lambda: fresh(cluster))
    assert pod_keys(cluster) == {"team-a/team-a-web", "team-b/team-b-web"}

    # Cluster-scoped kinds are not permitted (recorded as such), not stale, and the
    # cluster is reachable without an error.
    state = state_of(cluster)
    assert state["reachable"] == "1" and state["error"] == ""
    assert state["namespaces"] == "team-a,team-b"
    assert snapshot.not_permitted(state) == {
        **{kind: [] for kind in CLUSTER_SCOPED},
        "horizontalpodautoscalers": ["team-b"],
    }
    assert not snapshot.is_stale(state)
    row = await sync_to_async(Cluster.objects.get)(pk=cluster.pk)
    assert row.reachable and row.last_error == ""

    # Live: a pod in a watched namespace arrives, one in another never does.
    team_fake.store.create(pod("late", "other", node_name="n1"))
    team_fake.store.create(pod("late", "team-b", node_name="n1"))
    await eventually(lambda: "team-b/late" in pod_keys(cluster))
    await asyncio.sleep(0.5)
    assert pod_keys(cluster) == {
        "team-a/team-a-web",
        "team-b/team-b-web",
        "team-b/late",
    }

    # Every namespaced kind was listed and watched in the two namespaces only;
    # nothing was asked across the cluster but the cluster-scoped kinds.
    lists = [r for r in team_fake.requests if r.method == "GET" and "/v1/" in r.path]
    for r in lists:
        parts = r.path.strip("/").split("/")
        if "namespaces" in parts:
            assert parts[parts.index("namespaces") + 1] in ("team-a", "team-b"), r.path
        else:
            assert parts[-1] in CLUSTER_SCOPED, r.path
    for ns in ("team-a", "team-b"):
        path = f"/api/v1/namespaces/{ns}/pods"
        pod_requests = [r for r in lists if r.path == path]
        assert any("watch" not in r.query and r.status == 200 for r in pod_requests)
        watches = [r for r in pod_requests if r.query.get("watch") in ("true", "True")]
        assert watches and all(r.query.get("resourceVersion") for r in watches)
    refused = {r.path for r in lists if r.status == 403}
    assert "/api/v1/nodes" in refused
    assert "/api/v1/namespaces/team-a/pods" not in refused


async def test_each_namespace_resumes_from_its_own_resource_version(
    team_fake: FakeKubeServer, monitor: Running
) -> None:
    cluster = await sync_to_async(make_team_cluster)(team_fake)
    await eventually(lambda: fresh(cluster))
    team_fake.clear_requests()
    team_fake.set_available(False, mode="503")  # Drops every open watch.
    team_fake.store.create(pod("while-down", "team-a", node_name="n1"))
    await asyncio.sleep(0.3)
    team_fake.set_available(True, mode="503")
    await eventually(lambda: "team-a/while-down" in pod_keys(cluster))
    for ns in ("team-a", "team-b"):
        path = f"/api/v1/namespaces/{ns}/pods"
        requests = [r for r in team_fake.requests if r.path == path]
        watches = [r for r in requests if r.query.get("watch") in ("true", "True")]
        assert watches and all(r.query.get("resourceVersion") for r in watches)
        # Resumed, not relisted.
        assert not [r for r in requests if "watch" not in r.query and r.status == 200]


async def test_a_kind_permitted_later_is_listed_without_a_restart(
    team_fake: FakeKubeServer, monitor: Running
) -> None:
    cluster = await sync_to_async(make_team_cluster)(team_fake)
    await eventually(lambda: fresh(cluster))
    assert "nodes" in snapshot.not_permitted(state_of(cluster))
    assert snapshot.read_objects(cluster.pk, "nodes") == {}

    team_fake.allow(USER, ["get", "list", "watch"], ["nodes"])  # A ClusterRole.
    await eventually(lambda: "n1" in snapshot.read_objects(cluster.pk, "nodes"))
    await eventually(lambda: "nodes" not in snapshot.not_permitted(state_of(cluster)))
    assert state_of(cluster)["synced:nodes"] == "1"


async def test_without_namespaces_the_monitor_watches_across_the_cluster(
    fake: FakeKubeServer, monitor: Running
) -> None:
    fake.store.create(namespace("other"))
    fake.store.create(pod("a", "demo", node_name="n1"))
    fake.store.create(pod("b", "other", node_name="n1"))
    cluster = await sync_to_async(make_cluster)(fake)
    await eventually(lambda: fresh(cluster))
    assert pod_keys(cluster) == {"demo/a", "other/b"}
    state = state_of(cluster)
    assert state["namespaces"] == "" and snapshot.not_permitted(state) == {}
    paths = {r.path for r in fake.requests}
    assert "/api/v1/pods" in paths
    assert not any("/namespaces/" in p and p.endswith("/pods") for p in paths)


async def test_a_refused_identity_across_the_cluster_is_not_permitted_not_stale(
    team_fake: FakeKubeServer, monitor: Running
) -> None:
    # The same namespace-only identity without a namespace list: every list across
    # the cluster is refused, which the pages show as not permitted.
    cluster = await sync_to_async(make_cluster)(
        team_fake, kubeconfig=yaml.safe_dump(team_fake.kubeconfig(token=TOKEN))
    )
    await eventually(
        lambda: set(snapshot.not_permitted(state_of(cluster))) == set(WATCHED)
    )
    state = state_of(cluster)
    assert state["stale"] == "0" and state["reachable"] == "1"
    assert all(v == [] for v in snapshot.not_permitted(state).values())


# ------------------------------------------------------------------ the form


def form_data(server: FakeKubeServer, namespaces: str) -> dict[str, str]:
    return {
        "name": "team",
        "auth_mode": "kubeconfig",
        "kubeconfig": yaml.safe_dump(server.kubeconfig(token=TOKEN)),
        "context": "fakekube",
        "verify_tls": "on",
        "monitored": "on",
        "namespaces": namespaces,
    }


def test_form_splits_namespaces_on_commas_and_spaces(
    team_fake: FakeKubeServer,
) -> None:
    form = ClusterForm(data=form_data(team_fake, " team-b, team-a\nops  "))
    assert form.is_valid(), form.errors
    cluster = form.save()
    assert Cluster.objects.get(pk=cluster.pk).namespaces == ["ops", "team-a", "team-b"]
    # On edit the list is shown as it was typed: names and commas.
    assert ClusterForm(instance=cluster)["namespaces"].value() == "ops, team-a, team-b"


def test_form_leaves_namespaces_empty_for_all(team_fake: FakeKubeServer) -> None:
    form = ClusterForm(data=form_data(team_fake, ""))
    assert form.is_valid(), form.errors
    assert form.save().namespaces == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("Team-A", "Not a namespace name: Team-A"),
        ("team_a, ok", "Not a namespace name: team_a"),
        ("-lead", "Not a namespace name: -lead"),
        ("x" * 64, "Not a namespace name"),
        ("a, b, a", "listed twice"),
        (", ".join(f"ns{i}" for i in range(51)), "at most 50 namespaces"),
    ],
)
def test_form_rejects_names_kubernetes_would_refuse(
    team_fake: FakeKubeServer, text: str, message: str
) -> None:
    form = ClusterForm(data=form_data(team_fake, text))
    assert not form.is_valid()
    assert message in " ".join(form.errors["namespaces"])


def test_add_cluster_page_offers_namespaces_with_help(client: Any, alice: Any) -> None:
    client.force_login(alice)
    page = client.get(reverse("clusters:cluster-add")).content.decode()
    assert 'name="namespaces"' in page
    assert "Empty: watch all namespaces" in page


async def test_many_namespaces_get_a_connection_each_and_the_probe_still_answers(
    fake: FakeKubeServer, monitor: Running
) -> None:
    # 12 namespaces x 10 namespaced kinds + 3 cluster-scoped: 123 open watches, more
    # than the client's default pool of 100; the probe must not queue behind them.
    names = [f"ns{i:02d}" for i in range(12)]
    for ns in names:
        fake.store.create(namespace(ns))
        fake.store.create(pod("web", ns, node_name="n1"))
    cluster = await sync_to_async(make_cluster)(fake, namespaces=names)
    await eventually(lambda: fresh(cluster), timeout=20)
    assert pod_keys(cluster) == {f"{ns}/web" for ns in names}
    watcher, _task = monitor.monitor.watchers[cluster.pk]
    assert len(watcher.streams) == 123
    assert watcher.api.configuration.connection_pool_maxsize >= 123 + 1
    # With every watch open, the probe keeps answering and changes keep flowing.
    fake.clear_requests()
    fake.store.create(pod("late", "ns11", node_name="n1"))
    await eventually(lambda: "ns11/late" in pod_keys(cluster))
    await eventually(
        lambda: any(
            r.path.rstrip("/") == "/version" and r.status == 200 for r in fake.requests
        )
    )
    assert state_of(cluster)["reachable"] == "1"
