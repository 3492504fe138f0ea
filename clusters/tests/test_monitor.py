"""The monitor follows a fake cluster through the real kubernetes_asyncio client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from clusters import snapshot
from clusters.models import Cluster
from clusters.monitor import Monitor, Settings

from .factories import make_cluster, pod

pytestmark = pytest.mark.django_db(transaction=True)

FAST = Settings(
    refresh_interval=0.5,
    lock_ttl=3.0,
    flush_interval=0.1,
    probe_interval=0.3,
    probe_timeout=1.0,
    metrics_interval=0.5,
    watch_timeout=30,
    backoff_min=0.1,
    backoff_max=0.5,
)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Return CHECK()'s first truthy value, polling; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await sync_to_async(check)()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


class Running:
    def __init__(
        self, monitor: Monitor, stop: asyncio.Event, task: asyncio.Task
    ) -> None:
        self.monitor, self.stop, self.task = monitor, stop, task

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


async def start_monitor(identity: str = "test") -> Running:
    stop = asyncio.Event()
    monitor = Monitor(settings.REDIS_URL, get_channel_layer(), FAST, identity=identity)
    task = asyncio.create_task(monitor.run(stop))
    return Running(monitor, stop, task)


@pytest.fixture
async def monitor() -> AsyncIterator[Running]:
    running = await start_monitor()
    yield running
    await running.close()


def pods_of(cluster: Cluster) -> dict[str, dict]:
    return snapshot.read_objects(cluster.pk, "pods")


def synced(cluster: Cluster) -> bool:
    state = snapshot.read_state(cluster.pk)
    return bool(state) and state.get("stale") == "0"


async def test_monitor_idles_without_clusters(monitor: Running) -> None:
    await asyncio.wait_for(monitor.monitor.active.wait(), 5)
    await asyncio.sleep(0.3)
    assert not monitor.task.done()
    assert monitor.monitor.watchers == {}


async def test_monitor_follows_added_modified_deleted_and_publishes(
    fake: Any, monitor: Running
) -> None:
    fake.store.create(pod("before", node_name="n1"))
    cluster = await sync_to_async(make_cluster)(fake)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"cluster.{cluster.pk}", channel)

    await eventually(lambda: synced(cluster))
    assert "demo/before" in pods_of(cluster)
    assert snapshot.read_objects(cluster.pk, "nodes")["n1"]["status"] == "Ready"

    fake.store.create(pod("web-1", node_name="n1"))
    added = await eventually(lambda: pods_of(cluster).get("demo/web-1"))
    assert added["phase"] == "Running" and added["node"] == "n1"

    fake.store.patch_status(
        "pods",
        "demo",
        "web-1",
        {"containerStatuses": [{"name": "app", "ready": True, "restartCount": 3}]},
    )
    await eventually(lambda: pods_of(cluster)["demo/web-1"]["restarts"] == 3)

    fake.store.force_delete("pods", "demo", "web-1")
    await eventually(lambda: "demo/web-1" not in pods_of(cluster))

    # The same changes went to the group, batched, with the documented shape.
    seen: list[dict] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        c["op"] == "delete" and c["key"] == "demo/web-1" for c in seen
    ):
        message = await asyncio.wait_for(layer.receive(channel), 5)
        if message["type"] == "cluster.change":
            assert message["stale"] in (True, False)
            seen.extend(message["changes"])
    upserts = [c for c in seen if c["op"] == "upsert" and c["key"] == "demo/web-1"]
    assert upserts and upserts[0]["kind"] == "pods"
    assert {"name", "namespace", "phase", "ready", "restarts", "node"} <= set(
        upserts[-1]["obj"]
    )
    assert any(c["op"] == "delete" and c["key"] == "demo/web-1" for c in seen)


async def test_monitor_resumes_from_resource_version_after_a_dropped_watch(
    fake: Any, monitor: Running
) -> None:
    cluster = await sync_to_async(make_cluster)(fake)
    await eventually(lambda: synced(cluster))
    fake.clear_requests()
    fake.set_available(False, mode="503")  # Drops every open watch.
    fake.store.create(pod("while-down", node_name="n1"))
    await asyncio.sleep(0.3)
    fake.set_available(True, mode="503")
    await eventually(lambda: "demo/while-down" in pods_of(cluster))
    pod_requests = [r for r in fake.requests if r.path == "/api/v1/pods"]
    watches = [r for r in pod_requests if r.query.get("watch") in ("true", "True", "1")]
    assert watches and all(r.query.get("resourceVersion") for r in watches)
    assert watches[-1].query.get("allowWatchBookmarks") in ("true", "True")
    # Resumed, not relisted: no plain list of pods after the drop.
    assert not [r for r in pod_requests if "watch" not in r.query and r.status == 200]


async def test_monitor_relists_after_410_gone(fake: Any, monitor: Running) -> None:
    cluster = await sync_to_async(make_cluster)(fake)
    await eventually(lambda: synced(cluster))
    fake.set_available(False, mode="503")
    fake.store.create(pod("after-compaction", node_name="n1"))
    fake.store.force_delete("pods", "demo", "after-compaction")
    fake.store.create(pod("survivor", node_name="n1"))
    fake.store.compact()
    fake.clear_requests()
    fake.set_available(True, mode="503")
    await eventually(lambda: "demo/survivor" in pods_of(cluster))
    assert "demo/after-compaction" not in pods_of(cluster)
    relists = [
        r
        for r in fake.requests
        if r.path == "/api/v1/pods" and "watch" not in r.query and r.status == 200
    ]
    assert relists, "expected a relist after 410 Gone"


async def test_monitor_marks_unreachable_within_seconds_and_recovers(
    fake: Any, monitor: Running
) -> None:
    cluster = await sync_to_async(make_cluster)(fake)
    await eventually(lambda: synced(cluster))
    started = time.monotonic()
    fake.set_available(False)
    await eventually(lambda: snapshot.read_state(cluster.pk).get("reachable") == "0")
    assert time.monotonic() - started < 5
    row = await eventually(
        lambda: (
            Cluster.objects.filter(pk=cluster.pk, reachable=False)
            .exclude(last_error="")
            .first()
        )
    )
    assert row.last_error
    assert snapshot.is_stale(snapshot.read_state(cluster.pk))

    fake.set_available(True)
    fake.store.create(pod("back", node_name="n1"))
    await eventually(lambda: "demo/back" in pods_of(cluster))
    await eventually(lambda: synced(cluster))
    row = await eventually(
        lambda: Cluster.objects.filter(pk=cluster.pk, reachable=True).first()
    )
    assert row.server_version == "v1.36.2"


async def test_monitor_reports_missing_metrics_server(
    fake: Any, monitor: Running
) -> None:
    cluster = await sync_to_async(make_cluster)(fake)
    await eventually(lambda: snapshot.read_state(cluster.pk).get("metrics") == "none")


async def test_only_one_monitor_is_active_and_a_standby_takes_over(fake: Any) -> None:
    cluster = await sync_to_async(make_cluster)(fake)
    first = await start_monitor("first")
    await asyncio.wait_for(first.monitor.active.wait(), 5)
    second = await start_monitor("second")
    try:
        await asyncio.sleep(1.0)
        assert not second.monitor.active.is_set()
        await eventually(lambda: synced(cluster))
        await first.close()
        await asyncio.wait_for(second.monitor.active.wait(), 2 * FAST.lock_ttl)
        fake.store.create(pod("taken-over", node_name="n1"))
        await eventually(lambda: "demo/taken-over" in pods_of(cluster))
    finally:
        await second.close()
        if not first.task.done():
            await first.close()


def index_agrees(cluster: Cluster) -> bool:
    """Return whether the pods' index lists exactly the snapshot's pods."""
    _total, keys = snapshot.find_keys(cluster.pk, "pods", limit=10**6)
    return keys == sorted(pods_of(cluster))


def with_status(cluster: Cluster, status: str) -> list[str]:
    return snapshot.find_keys(cluster.pk, "pods", status=status, limit=10**6)[1]


async def test_monitor_lists_in_pages_and_keeps_the_pod_index_in_step(
    fake: Any,
) -> None:
    for i in range(7):
        fake.store.create(pod(f"p{i}", node_name="n1"))
    cluster = await sync_to_async(make_cluster)(fake)
    stop = asyncio.Event()
    small_pages = Settings(**{**FAST.__dict__, "page_size": 2})
    monitor = Monitor(settings.REDIS_URL, get_channel_layer(), small_pages)
    task = asyncio.create_task(monitor.run(stop))
    try:
        await eventually(lambda: synced(cluster))
        assert sorted(pods_of(cluster)) == [f"demo/p{i}" for i in range(7)]
        pages = [
            r
            for r in fake.requests
            if r.path == "/api/v1/pods" and "watch" not in r.query
        ]
        assert len(pages) == 4 and all(r.query.get("limit") == "2" for r in pages)
        assert index_agrees(cluster)

        # Watched changes move pods between the index's sets.
        fake.store.patch_status("pods", "demo", "p3", {"phase": "Failed"})
        fake.store.force_delete("pods", "demo", "p4")
        await eventually(lambda: with_status(cluster, "Failed") == ["demo/p3"])
        await eventually(lambda: index_agrees(cluster))
        assert "demo/p3" not in with_status(cluster, "Running")

        # A relist after 410 Gone drops what was deleted while the watch was down.
        fake.set_available(False, mode="503")
        fake.store.force_delete("pods", "demo", "p5")
        fake.store.create(pod("p9", node_name="n1"))
        fake.store.compact()
        fake.set_available(True, mode="503")
        await eventually(lambda: "demo/p9" in pods_of(cluster))
        await eventually(lambda: "demo/p5" not in pods_of(cluster))
        await eventually(lambda: index_agrees(cluster))
        assert snapshot.namespaces(cluster.pk, "pods") == ["demo"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
