"""Node and pod usage sampled from metrics.k8s.io, and the capped history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from clusters import snapshot
from clusters.fakekube import FakeKubeServer
from clusters.monitor import Monitor, Settings

from .factories import make_cluster, namespace, node, pod
from .test_monitor import FAST, Running, eventually

pytestmark = pytest.mark.django_db(transaction=True)

# Sample often, so a test sees many samples in a second or two.
SAMPLING = Settings(**{**FAST.__dict__, "metrics_interval": 0.1})


@pytest.fixture
def metrics_fake() -> Iterator[FakeKubeServer]:
    """A fake cluster with metrics-server: node n1 and pod demo/web use CPU."""
    with FakeKubeServer(metrics=True, bookmark_interval=1.0) as server:
        server.store.create(namespace("demo"))
        server.store.create(node("n1"))
        server.store.create(pod("web", node_name="n1"))
        server.set_node_usage("n1", "250m", "1Gi")
        server.set_pod_usage(
            "demo",
            "web",
            {
                "app": {"cpu": "100m", "memory": "64Mi"},
                "sidecar": {"cpu": "2500000n", "memory": "16384Ki"},
            },
        )
        yield server


async def start(monitor_settings: Settings = SAMPLING) -> Running:
    stop = asyncio.Event()
    monitor = Monitor(settings.REDIS_URL, get_channel_layer(), monitor_settings)
    return Running(monitor, stop, asyncio.create_task(monitor.run(stop)))


async def next_metrics(layer: Any, channel: str, count: int) -> list[dict]:
    """Return the next COUNT metrics messages the group carries (bounded wait)."""
    out: list[dict] = []
    async with asyncio.timeout(15):
        while len(out) < count:
            message = await layer.receive(channel)
            if message["type"] == "cluster.metrics":
                out.append(message)
    return out


async def test_monitor_stores_node_and_pod_usage_and_appends_history(
    metrics_fake: FakeKubeServer,
) -> None:
    cluster = await sync_to_async(make_cluster)(metrics_fake)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"cluster.{cluster.pk}", channel)
    running = await start()
    try:
        await eventually(lambda: snapshot.read_state(cluster.pk).get("metrics") == "ok")
        await eventually(lambda: snapshot.read_usage(cluster.pk, "pods"))
        assert snapshot.read_usage(cluster.pk, "nodes") == {
            "n1": {"cpu": 250, "mem": 1 << 30}
        }
        # A pod's usage is the sum of its containers' (whole millicores each:
        # 2500000n is 2.5 m, kept as 2).
        assert snapshot.read_usage(cluster.pk, "pods") == {
            "demo/web": {"cpu": 102, "mem": (64 << 20) + (16 << 20)}
        }

        # Every sample is published: node usage and the cluster totals.
        message = (await next_metrics(layer, channel, 1))[0]
        assert message["metrics"] == "ok"
        assert message["nodes"] == {"n1": {"cpu": 250, "mem": 1 << 30}}
        assert message["totals"]["cpu"] == 250
        assert message["totals"]["mem"] == 1 << 30

        # New usage reaches the snapshot and the history; a pod without metrics
        # any more drops out of the latest usage.
        metrics_fake.set_node_usage("n1", "1500m", "2Gi")
        metrics_fake.pod_usage.clear()
        await eventually(lambda: snapshot.read_history(cluster.pk)[-1]["cpu"] == 1500)
        await eventually(lambda: snapshot.read_usage(cluster.pk, "pods") == {})
        history = snapshot.read_history(cluster.pk)
        assert len(history) >= 2
        assert history[0]["cpu"] == 250 and history[-1]["mem"] == 2 << 30
        assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    finally:
        await running.close()


async def test_history_keeps_only_the_retained_number_of_samples(
    metrics_fake: FakeKubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "HISTORY_LEN", 4)
    cluster = await sync_to_async(make_cluster)(metrics_fake)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"cluster.{cluster.pk}", channel)
    running = await start()
    try:
        published = await next_metrics(layer, channel, 10)
        r = snapshot.client()
        assert r.llen(snapshot.history_key(cluster.pk)) == 4
        history = snapshot.read_history(cluster.pk)
        # The newest four, oldest first: the last one is the sample published last.
        newest = json.loads(r.lindex(snapshot.history_key(cluster.pk), 0))
        assert history[-1] == newest
        assert newest["at"] >= published[-2]["totals"]["at"]
    finally:
        await running.close()


async def test_metrics_server_going_away_is_reported_not_zeroed(
    metrics_fake: FakeKubeServer,
) -> None:
    cluster = await sync_to_async(make_cluster)(metrics_fake)
    running = await start()
    try:
        await eventually(lambda: snapshot.read_state(cluster.pk).get("metrics") == "ok")
        await eventually(lambda: snapshot.read_history(cluster.pk))
        metrics_fake.metrics_enabled = False  # metrics.k8s.io now answers 404.
        await eventually(
            lambda: snapshot.read_state(cluster.pk).get("metrics") == "none"
        )
        samples = len(snapshot.read_history(cluster.pk))
        await asyncio.sleep(0.5)
        assert len(snapshot.read_history(cluster.pk)) == samples  # No zero samples.
    finally:
        await running.close()


async def test_with_namespaces_pod_usage_covers_only_those_namespaces(
    metrics_fake: FakeKubeServer,
) -> None:
    # A Role in demo only: pod metrics there, node metrics refused (403). The pods'
    # usage is kept; with no node metrics there is no cluster total, and none of
    # zero enters the history.
    metrics_fake.store.create(namespace("other"))
    metrics_fake.store.create(pod("db", "other", node_name="n1"))
    metrics_fake.set_pod_usage("other", "db", {"db": {"cpu": "900m", "memory": "1Gi"}})
    metrics_fake.add_token("demo-token", "demo-user")
    metrics_fake.allow("demo-user", ["get", "list", "watch"], ["*"], namespace="demo")
    cluster = await sync_to_async(make_cluster)(
        metrics_fake,
        kubeconfig=yaml.safe_dump(metrics_fake.kubeconfig(token="demo-token")),
        namespaces=["demo"],
    )
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"cluster.{cluster.pk}", channel)
    running = await start()
    try:
        published = await next_metrics(layer, channel, 3)
        assert all(m["totals"] is None and m["nodes"] == {} for m in published)
        assert snapshot.read_usage(cluster.pk, "pods") == {
            "demo/web": {"cpu": 102, "mem": (64 << 20) + (16 << 20)}
        }
        assert snapshot.read_usage(cluster.pk, "nodes") == {}
        assert snapshot.read_history(cluster.pk) == []
        assert snapshot.read_state(cluster.pk)["metrics"] == "ok"
        metrics = [r for r in metrics_fake.requests if "metrics.k8s.io" in r.path]
        assert {(r.path, r.status) for r in metrics} == {
            ("/apis/metrics.k8s.io/v1beta1/nodes", 403),
            ("/apis/metrics.k8s.io/v1beta1/namespaces/demo/pods", 200),
        }
    finally:
        await running.close()


async def test_an_identity_refused_all_metrics_is_reported_as_such(
    metrics_fake: FakeKubeServer,
) -> None:
    metrics_fake.add_token("pods-token", "pods-user")
    metrics_fake.allow(
        "pods-user", ["get", "list", "watch"], ["pods"], "demo", api_groups=("",)
    )
    cluster = await sync_to_async(make_cluster)(
        metrics_fake,
        kubeconfig=yaml.safe_dump(metrics_fake.kubeconfig(token="pods-token")),
        namespaces=["demo"],
    )
    running = await start()
    try:
        await eventually(
            lambda: snapshot.read_state(cluster.pk).get("metrics") == "forbidden"
        )
        assert "demo/web" in snapshot.read_objects(cluster.pk, "pods")
        assert snapshot.read_usage(cluster.pk, "pods") == {}
        assert snapshot.read_history(cluster.pk) == []
    finally:
        await running.close()
