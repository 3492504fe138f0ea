"""The "stale" marker ends as soon as the watches reconnect, not at the next event."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async

from clusters import snapshot
from clusters.fakekube import FakeKubeServer

from .factories import make_cluster, namespace, node
from .test_monitor import eventually, start_monitor

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quiet_fake() -> Iterator[FakeKubeServer]:
    """A fake cluster that sends bookmarks every ten minutes, and nothing changes:
    after an outage no watch gets an event for minutes (a real server sends a
    bookmark about once a minute)."""
    with FakeKubeServer(bookmark_interval=600.0) as server:
        server.store.create(namespace("demo"))
        server.store.create(node("n1"))
        yield server


def stale(cluster_id: int) -> str | None:
    return snapshot.read_state(cluster_id).get("stale")


@pytest.mark.parametrize("mode", ["503", "refuse"])
async def test_stale_marker_clears_within_seconds_of_recovery_on_quiet_kinds(
    quiet_fake: FakeKubeServer, mode: str
) -> None:
    cluster = await sync_to_async(make_cluster)(quiet_fake)
    running = await start_monitor()
    try:
        await eventually(lambda: stale(cluster.pk) == "0")
        quiet_fake.set_available(False, mode=mode)  # Drops every open watch.
        await eventually(lambda: stale(cluster.pk) == "1")
        quiet_fake.clear_requests()
        quiet_fake.set_available(True, mode=mode)
        recovered = time.monotonic()
        await eventually(lambda: stale(cluster.pk) == "0", timeout=10)
        took = time.monotonic() - recovered
        assert took < 4, f"stale for {took:.1f} s after the API server came back"
        # It resumed the watches (no relist) and no bookmark has come since.
        watches = [
            r for r in quiet_fake.requests if r.query.get("watch") in ("true", "True")
        ]
        assert {r.path for r in watches} >= {"/api/v1/nodes", "/api/v1/pods"}
        assert all(r.query.get("resourceVersion") for r in watches)
        state = snapshot.read_state(cluster.pk)
        assert state["reachable"] == "1" and not snapshot.is_stale(state)
    finally:
        await running.close()
