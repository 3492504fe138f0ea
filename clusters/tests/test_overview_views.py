"""The overview's usage charts and the nodes page, rendered from the snapshot the
monitor keeps (objects projected from manifests, as the monitor projects them)."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from clusters import projection, snapshot
from clusters.views import CHART_SAMPLES

from .factories import make_cluster, node, pod

pytestmark = pytest.mark.django_db

SERVER = {"api_server": "http://127.0.0.1:9", "auth_mode": "token", "token": "t"}


def store(cluster_id: int, kind: str, manifests: list[dict]) -> None:
    snapshot.write_objects(
        cluster_id,
        kind,
        {projection.key_of(m): projection.project(kind, m) for m in manifests},
    )


def set_state(cluster_id: int, metrics: str) -> None:
    snapshot.client().hset(
        snapshot.state_key(cluster_id),
        mapping={"stale": "0", "reachable": "1", "metrics": metrics},
    )


def add_history(cluster_id: int, samples: list[dict]) -> None:
    """Push SAMPLES (oldest first) as the monitor does: newest at the list's head."""
    r = snapshot.client()
    for s in samples:
        r.lpush(snapshot.history_key(cluster_id), json.dumps(s))


def usage_data(html: str) -> dict:
    match = re.search(
        r'<script id="cluster-usage" type="application/json">(.*?)</script>',
        html,
        re.S,
    )
    assert match, "the page carries no usage data"
    return json.loads(match.group(1))


def requesting(name: str, node_name: str, cpu: str, memory: str) -> dict:
    manifest = pod(name, node_name=node_name)
    manifest["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": cpu, "memory": memory}
    }
    return manifest


# ------------------------------------------------------------------- overview


def test_overview_carries_the_usage_history_and_the_chart_containers(client, victor):
    cluster = make_cluster(**SERVER)
    store(cluster.pk, "nodes", [node("n1"), node("n2")])
    store(
        cluster.pk,
        "pods",
        [requesting("a", "n1", "500m", "1Gi"), requesting("b", "n2", "250m", "1Gi")],
    )
    samples = [
        {"at": 1_800_000_000 + 5 * i, "cpu": 1000 + i, "mem": (2 << 30) + i}
        for i in range(5)
    ]
    add_history(cluster.pk, samples)
    snapshot.client().hset(
        snapshot.usage_key(cluster.pk, "nodes"),
        mapping={"n1": json.dumps({"cpu": 700, "mem": 1 << 30})},
    )
    set_state(cluster.pk, "ok")
    client.force_login(victor)
    html = client.get(reverse("clusters:cluster-detail", args=[cluster.pk])).content
    html = html.decode()
    data = usage_data(html)
    assert data["samples"] == [[s["at"], s["cpu"], s["mem"]] for s in samples]
    assert (data["cpu_alloc"], data["mem_alloc"]) == (8000, 16 << 30)
    assert (data["cpu_req"], data["mem_req"]) == (750, 2 << 30)
    assert data["keep"] == CHART_SAMPLES
    assert 'data-usage-chart="cpu"' in html and 'data-usage-chart="mem"' in html
    assert 'data-usage-now="cpu"' in html and 'data-usage-now="mem"' in html
    assert "/static/js/charts.js" in html and "/static/js/clusters.js" in html
    assert "data-usage-charts-off" not in html
    # The live kinds include nodes: the consumer forwards metrics to such pages.
    assert 'data-live-kinds="nodes"' in html


def test_overview_sends_only_the_charts_window_newest_last(client, victor):
    cluster = make_cluster(**SERVER)
    samples = [{"at": 1_800_000_000 + 5 * i, "cpu": i, "mem": i} for i in range(300)]
    add_history(cluster.pk, samples)
    set_state(cluster.pk, "ok")
    client.force_login(victor)
    html = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    data = usage_data(html.content.decode())
    assert len(data["samples"]) == CHART_SAMPLES
    assert data["samples"][-1] == [samples[-1]["at"], 299, 299]
    assert data["samples"][0][0] == samples[300 - CHART_SAMPLES]["at"]


def test_overview_before_the_first_sample_still_has_the_charts(client, victor):
    cluster = make_cluster(**SERVER)
    set_state(cluster.pk, "unknown")
    client.force_login(victor)
    html = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    html = html.content.decode()
    # Empty now; clusters.js draws "no samples yet" and the first live sample.
    assert usage_data(html)["samples"] == []
    assert 'data-usage-chart="cpu"' in html
    assert "no metrics yet" in html


def test_overview_without_metrics_server_says_so_instead_of_a_chart(client, victor):
    cluster = make_cluster(**SERVER)
    store(cluster.pk, "nodes", [node("n1")])
    set_state(cluster.pk, "none")
    client.force_login(victor)
    html = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    html = html.content.decode()
    assert "data-usage-charts-off" in html
    assert "metrics-server is not installed on this cluster" in html
    assert "data-usage-chart=" not in html
    assert 'id="cluster-usage"' not in html
    # The capacity table says it too, instead of showing zeros.
    assert html.count("metrics-server not installed") == 2


def test_overview_escapes_nothing_it_should_not_in_the_usage_json(client, victor):
    """The data is JSON in a script element: a sample cannot close the element."""
    cluster = make_cluster(**SERVER)
    snapshot.client().lpush(
        snapshot.history_key(cluster.pk),
        json.dumps({"at": 1, "cpu": "</script><b>x", "mem": 0}),
    )
    set_state(cluster.pk, "ok")
    client.force_login(victor)
    html = client.get(reverse("clusters:cluster-detail", args=[cluster.pk]))
    html = html.content.decode()
    assert "</script><b>x" not in html
    assert usage_data(html)["samples"] == [[1, "</script><b>x", 0]]


# ----------------------------------------------------------------------- nodes


def big_node() -> dict:
    manifest = node(
        "cp-1",
        spec={
            "taints": [
                {
                    "key": "node-role.kubernetes.io/control-plane",
                    "effect": "NoSchedule",
                },
                {"key": "dedicated", "value": "infra", "effect": "NoExecute"},
            ]
        },
    )
    manifest["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
    manifest["status"]["capacity"] = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    manifest["status"]["allocatable"] = {
        "cpu": "7800m",
        "memory": "30Gi",
        "pods": "100",
    }
    manifest["status"]["conditions"].append(
        {
            "type": "MemoryPressure",
            "status": "True",
            "reason": "KubeletHasInsufficientMemory",
        }
    )
    manifest["status"]["nodeInfo"]["kubeletVersion"] = "v1.36.1"
    return manifest


def test_nodes_page_shows_every_field_issue_7_lists(client, victor):
    cluster = make_cluster(**SERVER)
    store(cluster.pk, "nodes", [big_node(), node("n2")])
    store(
        cluster.pk,
        "pods",
        [
            pod("a", node_name="cp-1"),
            pod("b", node_name="cp-1"),
            pod("c", node_name="n2"),
        ],
    )
    snapshot.client().hset(
        snapshot.usage_key(cluster.pk, "nodes"),
        mapping={"cp-1": json.dumps({"cpu": 2500, "mem": 12 << 30})},
    )
    set_state(cluster.pk, "ok")
    client.force_login(victor)
    html = client.get(reverse("clusters:nodes", args=[cluster.pk])).content.decode()
    row = re.search(r'<tr data-key="cp-1">(.*?)</tr>', html, re.S).group(1)
    cells = [
        re.sub(r"<[^>]+>", "", c).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]
    name, status, kubelet, cpu, memory, usage, pods, conditions, taints = cells[:9]
    assert name == "cp-1control-plane"  # the roles under the name
    assert status == "Ready"
    assert kubelet == "v1.36.1"
    assert cpu == "7.8 / 8"  # allocatable beside capacity
    assert memory == "30Gi / 32Gi"
    assert usage == "2.5 / 12Gi"
    assert pods == "2 / 100"
    assert conditions == "MemoryPressure: KubeletHasInsufficientMemory"
    assert taints == (
        "node-role.kubernetes.io/control-plane:NoSchedule, dedicated=infra:NoExecute"
    )
    assert f'href="/clusters/{cluster.pk}/pods/?node=cp-1"' in row
    other = re.search(r'<tr data-key="n2">(.*?)</tr>', html, re.S).group(1)
    assert "healthy" in other and ">1</a>" in other
    assert 'data-usage-for="n2"><span class="muted">—</span>' in other
    # Headers the live rows are rebuilt from (clusters.js) name the same fields.
    for fmt in ("cpu-pair", "mem-pair", "usage", "node-pods", "conditions"):
        assert f'data-format="{fmt}"' in html


def test_nodes_page_without_metrics_server_says_so(client, victor):
    cluster = make_cluster(**SERVER)
    store(cluster.pk, "nodes", [node("n1")])
    set_state(cluster.pk, "none")
    client.force_login(victor)
    html = client.get(reverse("clusters:nodes", args=[cluster.pk])).content.decode()
    assert "metrics-server is not installed: usage is not available." in html
