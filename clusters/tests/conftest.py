"""Fixtures for cluster tests: a fake API server reached over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clusters import snapshot
from clusters.fakekube import FakeKubeServer

from .factories import namespace, node


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    """A fake Kubernetes API server with namespace demo and node n1."""
    with FakeKubeServer(bookmark_interval=1.0) as server:
        server.store.create(namespace("demo"))
        server.store.create(node("n1"))
        yield server


@pytest.fixture(autouse=True)
def _clean_redis_snapshots() -> Iterator[None]:
    """Start every test without snapshots or a monitor lock left by another."""
    r = snapshot.client()
    for key in r.scan_iter(match="slipway:cluster:*", count=1000):
        r.delete(key)
    r.delete("slipway:monitor:lock")
    yield
