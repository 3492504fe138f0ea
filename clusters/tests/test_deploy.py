"""apply_manifests and wait_for_rollout against the fake API server."""

from __future__ import annotations

import threading
import time

import pytest

from clusters import deploy

from .factories import deployment, make_cluster

pytestmark = pytest.mark.django_db


def finish_rollout(fake, name: str, *, deadline_exceeded: bool = False) -> None:
    time.sleep(0.5)
    obj = fake.store.get("deployments", "demo", name)
    replicas = obj["spec"]["replicas"]
    reason = (
        "ProgressDeadlineExceeded" if deadline_exceeded else "NewReplicaSetAvailable"
    )
    fake.store.patch_status(
        "deployments",
        "demo",
        name,
        {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": 0 if deadline_exceeded else replicas,
            "readyReplicas": 0 if deadline_exceeded else replicas,
            "availableReplicas": 0 if deadline_exceeded else replicas,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False" if deadline_exceeded else "True",
                    "reason": reason,
                    "message": f"rollout: {reason}",
                }
            ],
        },
    )


def test_apply_then_wait_follows_the_watch_until_rolled_out(fake):
    cluster = make_cluster(fake)
    applied = deploy.apply_manifests(cluster, "demo", [deployment("shop", "demo", 3)])
    assert [a.key for a in applied] == ["Deployment/demo/shop"]
    assert applied[0].generation >= 1
    threading.Thread(target=finish_rollout, args=(fake, "shop"), daemon=True).start()
    lines: list[str] = []
    result = deploy.wait_for_rollout(
        cluster, applied, timeout=10, progress=lines.append
    )
    assert result.ok, result.reason
    assert any("observe" in line for line in lines)
    watches = [
        r for r in fake.requests if r.query.get("watch") and "deployments" in r.path
    ]
    assert watches and watches[0].query.get("resourceVersion")


def test_progress_deadline_exceeded_fails_with_the_reason(fake):
    cluster = make_cluster(fake)
    applied = deploy.apply_manifests(cluster, "demo", [deployment("shop")])
    threading.Thread(
        target=finish_rollout,
        args=(fake, "shop"),
        kwargs={"deadline_exceeded": True},
        daemon=True,
    ).start()
    result = deploy.wait_for_rollout(cluster, applied, timeout=10)
    assert not result.ok and "ProgressDeadlineExceeded" in result.reason


def test_wait_times_out(fake):
    cluster = make_cluster(fake)
    applied = deploy.apply_manifests(cluster, "demo", [deployment("slow")])
    started = time.monotonic()
    result = deploy.wait_for_rollout(cluster, applied, timeout=1.5)
    assert not result.ok and "timed out" in result.reason
    assert time.monotonic() - started < 5


def test_apply_refuses_a_document_for_another_namespace(fake):
    from clusters.kube import KubeError

    cluster = make_cluster(fake)
    doc = deployment("x", namespace="other")
    with pytest.raises(KubeError) as info:
        deploy.apply_manifests(cluster, "demo", [doc])
    assert info.value.status == 422
