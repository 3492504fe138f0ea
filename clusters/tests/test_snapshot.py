"""The pods' index in Redis: pages and filters agree with a plain scan of the hash."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from clusters import snapshot

CID = 4242


def reference(
    objects: dict[str, dict[str, Any]],
    namespace: str = "",
    status: str = "",
    node: str = "",
    search: str = "",
) -> list[str]:
    """Return the matching keys the slow, obvious way."""
    out = []
    for key in sorted(objects):
        obj = objects[key]
        if namespace and not key.startswith(namespace + "/"):
            continue
        if status and status not in (obj.get("phase"), obj.get("reason")):
            continue
        if node and obj.get("node") != node:
            continue
        if search and search not in key and search not in obj.get("owner", "").lower():
            continue
        out.append(key)
    return out


def make_pod(rng: random.Random, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "phase": rng.choice(["Running", "Pending", "Succeeded", "Failed"]),
        "node": rng.choice(["", "n1", "n2", "n10"]),
    }
    if rng.random() < 0.3:
        obj["reason"] = rng.choice(["CrashLoopBackOff", "Terminating", "Running"])
    if rng.random() < 0.7:
        obj["owner"] = rng.choice(
            ["ReplicaSet/Web-7f9", "StatefulSet/db", "Job/%_*[x]", "ReplicaSet/api"]
        )
    return obj


def assert_index_matches(objects: dict[str, dict[str, Any]]) -> None:
    """Check every filter combination and a few pages against the reference."""
    namespaces = sorted({k.split("/", 1)[0] for k in objects})
    assert snapshot.namespaces(CID, "pods") == namespaces
    assert snapshot.count(CID, "pods") == len(objects)
    for namespace, status, node, search in itertools.product(
        ["", *namespaces, "n"],
        ["", "Running", "Pending", "CrashLoopBackOff"],
        ["", "n1", "n10"],
        ["", "web", "%_*[", "db-1", "zzz", "1\0rep"],
    ):
        want = reference(objects, namespace, status, node, search)
        for offset, limit in ((0, 7), (7, 7), (len(want), 5)):
            total, keys = snapshot.find_keys(
                CID,
                "pods",
                namespace=namespace,
                status=status,
                node=node,
                search=search,
                offset=offset,
                limit=limit,
            )
            assert total == len(want), (namespace, status, node, search)
            assert keys == want[offset : offset + limit], (namespace, status, node)


@pytest.fixture
def redis_clean() -> Any:
    r = snapshot.client()
    for key in r.scan_iter(match=f"{snapshot.prefix(CID)}:*"):
        r.delete(key)
    yield r
    for key in r.scan_iter(match=f"{snapshot.prefix(CID)}:*"):
        r.delete(key)


def test_index_pages_and_filters_like_a_scan_through_writes_and_deletes(
    redis_clean: Any,
) -> None:
    rng = random.Random(7)
    # Namespaces whose names sort around "ns/": a key range must hold only its own.
    names = ["ns", "ns-a", "ns.x", "ns0", "nt", "a"]
    objects: dict[str, dict[str, Any]] = {}
    for i in range(300):
        namespace = rng.choice(names)
        key = f"{namespace}/db-{i}"
        objects[key] = make_pod(rng, namespace, f"db-{i}")
    snapshot.write_objects(CID, "pods", dict(objects))
    assert_index_matches(objects)

    # Changes of phase, reason, node and owner move keys between the sets.
    for _round in range(3):
        changes: dict[str, dict[str, Any] | None] = {}
        for key in rng.sample(sorted(objects), 80):
            if rng.random() < 0.3:
                changes[key] = None
                del objects[key]
            else:
                namespace, name = key.split("/", 1)
                objects[key] = changes[key] = make_pod(rng, namespace, name)
        snapshot.write_objects(CID, "pods", changes)
        assert_index_matches(objects)

    # A namespace emptied of pods leaves the namespace list.
    gone = [k for k in objects if k.startswith("ns0/")]
    snapshot.write_objects(CID, "pods", dict.fromkeys(gone))
    for key in gone:
        del objects[key]
    assert "ns0" not in snapshot.namespaces(CID, "pods")
    assert_index_matches(objects)
    stored = snapshot.read_objects(CID, "pods")
    assert stored == objects


def test_unindexed_kinds_write_only_the_hash(redis_clean: Any) -> None:
    snapshot.write_objects(CID, "nodes", {"n1": {"name": "n1", "status": "Ready"}})
    assert snapshot.read_object(CID, "nodes", "n1") == {"name": "n1", "status": "Ready"}
    assert not list(redis_clean.scan_iter(match=snapshot.index_pattern(CID)))
    stored = redis_clean.hget(snapshot.objects_key(CID, "nodes"), "n1")
    assert json.loads(stored)["status"] == "Ready"
