"""The fake API server driven through the real official clients (kubernetes and
kubernetes_asyncio), over HTTP(S) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request

import kubernetes
import kubernetes_asyncio
import pytest
from kubernetes.client.rest import ApiException

from clusters.fakekube import FakeKubeServer


def deployment(name="web", replicas=2, image="nginx:1.27", ns="demo"):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image},
                        {"name": "sidecar", "image": "busybox:1.36"},
                    ]
                },
            },
        },
    }


@pytest.fixture
def srv():
    with FakeKubeServer(seed=7) as s:
        s.store.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
        )
        yield s


def sync_client(srv, token=None) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    loader = kubernetes.config.kube_config.KubeConfigLoader(srv.kubeconfig(token))
    loader.load_and_set(cfg)
    return kubernetes.client.ApiClient(cfg)


def test_list_watch_resume_and_410(srv):
    api = kubernetes.client.CoreV1Api(sync_client(srv))
    for i in range(3):
        srv.store.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"p{i}",
                    "namespace": "demo",
                    "labels": {"app": "x"},
                },
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }
        )
    pods = api.list_namespaced_pod("demo", label_selector="app in (x,y)", limit=2)
    # with a selector the real server omits remainingItemCount
    assert len(pods.items) == 2 and pods.metadata._continue
    assert pods.metadata.remaining_item_count is None
    rest = api.list_namespaced_pod(
        "demo",
        label_selector="app in (x,y)",
        limit=2,
        _continue=pods.metadata._continue,
    )
    assert [p.metadata.name for p in rest.items] == [
        "p2"
    ] and rest.metadata._continue is None
    rv = pods.metadata.resource_version
    srv.store.delete("pods", "demo", "p0")  # unbound pod: deleted at once
    srv.store.patch_status("pods", "demo", "p1", {"phase": "Running"})
    w = kubernetes.watch.Watch()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(
            api.list_namespaced_pod, "demo", resource_version=rv, timeout_seconds=1
        )
    ]
    assert events == [("DELETED", "p0"), ("MODIFIED", "p1")]
    # compacted history: the client raises ApiException(410) from the ERROR event
    srv.store.compact()
    with pytest.raises(ApiException) as exc:
        for _ in kubernetes.watch.Watch().stream(
            api.list_namespaced_pod, "demo", resource_version=rv, timeout_seconds=2
        ):
            pass
    assert exc.value.status == 410
    with pytest.raises(ApiException) as exc:
        api.list_namespaced_pod(
            "demo", resource_version=rv, resource_version_match="Exact"
        )
    assert exc.value.status == 410
    # the fake recorded the exact request the client sent
    last = srv.requests[-1]
    assert last.path == "/api/v1/namespaces/demo/pods"
    assert last.query == {"resourceVersion": rv, "resourceVersionMatch": "Exact"}
    assert last.headers["authorization"] == "Bearer test-token"


def test_patch_types_through_the_sync_client(srv):
    apps = kubernetes.client.AppsV1Api(sync_client(srv))
    apps.create_namespaced_deployment("demo", deployment())
    smp = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}
            }
        }
    }
    d = apps.patch_namespaced_deployment(
        "web", "demo", smp, _content_type="application/strategic-merge-patch+json"
    )
    assert [c.image for c in d.spec.template.spec.containers] == [
        "nginx:1.28",
        "busybox:1.36",
    ]
    assert d.metadata.generation == 2
    merge = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": "nginx:1.29"}]}
            }
        }
    }
    d = apps.patch_namespaced_deployment(
        "web", "demo", merge, _content_type="application/merge-patch+json"
    )
    assert [c.name for c in d.spec.template.spec.containers] == ["app"]
    # A dict body declared as JSON Patch is rejected like a real server does (the README's
    # client pitfall). The installed kubernetes 37 sync rest layer rewrites that header to
    # strategic merge for non-list bodies, so send the raw request to show the server side.
    d = apps.patch_namespaced_deployment(
        "web",
        "demo",
        {"spec": {"replicas": 2}},
        _content_type="application/json-patch+json",
    )
    assert (
        srv.requests[-1].headers["content-type"]
        == "application/strategic-merge-patch+json"
    )
    req = urllib.request.Request(
        srv.url + "/apis/apps/v1/namespaces/demo/deployments/web",
        method="PATCH",
        data=b'{"spec":{"replicas":3}}',
        headers={
            "Authorization": "Bearer test-token",
            "Content-Type": "application/json-patch+json",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as herr:
        urllib.request.urlopen(req, timeout=5)
    assert herr.value.code == 400
    assert (
        "cannot unmarshal object into Go value of type jsonpatch.Patch"
        in herr.value.read().decode()
    )
    d = apps.patch_namespaced_deployment(
        "web",
        "demo",
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
        ],
        _content_type="application/json-patch+json",
    )
    assert d.spec.replicas == 3
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment(
            "web",
            "demo",
            [{"op": "test", "path": "/spec/replicas", "value": 99}],
            _content_type="application/json-patch+json",
        )
    assert exc.value.status == 422
    # server-side apply: owned fields, conflicts and force
    body = deployment(replicas=4)
    with pytest.raises(
        ApiException
    ) as exc:  # the earlier Update manager owns those fields
        apps.patch_namespaced_deployment(
            "web",
            "demo",
            body,
            field_manager="slipway",
            _content_type="application/apply-patch+yaml",
        )
    assert exc.value.status == 409 and "OpenAPI-Generator" in exc.value.body
    d = apps.patch_namespaced_deployment(
        "web",
        "demo",
        body,
        field_manager="slipway",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    assert d.spec.replicas == 4
    assert "slipway" in [m.manager for m in d.metadata.managed_fields]
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment(
            "web",
            "demo",
            deployment(replicas=5),
            field_manager="other",
            _content_type="application/apply-patch+yaml",
        )
    assert exc.value.status == 409
    assert (
        ".spec.replicas" in exc.value.body and "FieldManagerConflict" in exc.value.body
    )
    d = apps.patch_namespaced_deployment(
        "web",
        "demo",
        deployment(replicas=5),
        field_manager="other",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    assert d.spec.replicas == 5
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment(
            "web", "demo", deployment(), _content_type="application/apply-patch+yaml"
        )
    assert exc.value.status == 422
    # scale subresource
    scale = apps.read_namespaced_deployment_scale("web", "demo")
    assert scale.spec.replicas == 5 and scale.status.selector == "app=web"
    scale = apps.patch_namespaced_deployment_scale(
        "web",
        "demo",
        {"spec": {"replicas": 1}},
        _content_type="application/merge-patch+json",
    )
    assert scale.spec.replicas == 1
    stale = apps.read_namespaced_deployment_scale("web", "demo")
    apps.patch_namespaced_deployment_scale(
        "web",
        "demo",
        {"spec": {"replicas": 2}},
        _content_type="application/merge-patch+json",
    )
    stale.spec.replicas = 7
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment_scale("web", "demo", stale)
    assert exc.value.status == 409


def test_eviction_blocked_by_pdb(srv):
    api = kubernetes.client.CoreV1Api(sync_client(srv))
    policy = kubernetes.client.PolicyV1Api(sync_client(srv))
    for i in range(2):
        srv.store.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"api-{i}",
                    "namespace": "demo",
                    "labels": {"app": "api"},
                },
                "spec": {
                    "nodeName": "n1",
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            }
        )
        srv.store.patch_status(
            "pods",
            "demo",
            f"api-{i}",
            {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        )
    policy.create_namespaced_pod_disruption_budget(
        "demo",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "api-pdb"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}},
        },
    )
    eviction = kubernetes.client.V1Eviction(
        metadata=kubernetes.client.V1ObjectMeta(name="api-0", namespace="demo")
    )
    with pytest.raises(ApiException) as exc:
        api.create_namespaced_pod_eviction("api-0", "demo", eviction)
    assert exc.value.status == 429 and "DisruptionBudget" in exc.value.body
    policy.patch_namespaced_pod_disruption_budget(
        "api-pdb",
        "demo",
        {"spec": {"minAvailable": 1}},
        _content_type="application/merge-patch+json",
    )
    api.create_namespaced_pod_eviction("api-0", "demo", eviction)
    pod = api.read_namespaced_pod("api-0", "demo")
    assert pod.metadata.deletion_timestamp is not None  # graceful: still terminating


def test_auth_rbac_tls_and_outage():
    with FakeKubeServer(tls=True) as srv:
        srv.store.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
        )
        api = kubernetes.client.CoreV1Api(sync_client(srv))
        assert srv.url.startswith("https://") and "BEGIN CERTIFICATE" in srv.ca_pem
        assert api.list_namespace().items
        with pytest.raises(ApiException) as exc:
            kubernetes.client.CoreV1Api(sync_client(srv, token="nope")).list_namespace()
        assert exc.value.status == 401
        sa = srv.service_account_token("demo", "no-perms")
        limited = kubernetes.client.CoreV1Api(sync_client(srv, token=sa))
        with pytest.raises(ApiException) as exc:
            limited.list_namespaced_pod("demo")
        assert exc.value.status == 403
        srv.allow("system:serviceaccount:demo:no-perms", ["list"], ["pods"], "demo")
        assert limited.list_namespaced_pod("demo").items == []
        authz = kubernetes.client.AuthorizationV1Api(sync_client(srv))
        review = authz.create_self_subject_rules_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectRulesReview",
                "spec": {"namespace": "demo"},
            }
        )
        assert review.status.resource_rules[0].verbs == ["*"]
        srv.add_rbac_denial("test-token", "delete", "pods", "demo")
        srv.set_available(False)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", srv.port)) != 0  # connection refused
        srv.set_available(True)
        assert api.list_namespace().items


def test_controllers_rollout_and_failed_rollout():
    with FakeKubeServer() as srv:
        srv.populate(nodes=3, pods=0, namespaces=1)
        srv.simulate_controllers(True, deadline_factor=0.002)  # 600 s deadline -> 1.2 s
        apps = kubernetes.client.AppsV1Api(sync_client(srv))
        apps.create_namespaced_deployment("ns-00", deployment("web", 3, ns="ns-00"))

        def wait(pred, timeout=5.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                d = apps.read_namespaced_deployment_status("web", "ns-00")
                if pred(d):
                    return d
                time.sleep(0.02)
            raise AssertionError(d.status)

        def progressing(d):
            return {c.type: c for c in d.status.conditions or []}.get("Progressing")

        t0 = time.monotonic()
        d = wait(
            lambda d: (
                progressing(d)
                and progressing(d).reason == "NewReplicaSetAvailable"
                and d.status.available_replicas == 3
            )
        )
        assert time.monotonic() - t0 < 2.0
        assert d.status.observed_generation == d.metadata.generation
        apps.patch_namespaced_deployment(
            "web",
            "ns-00",
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "app", "image": "nginx:bad"}]}
                    }
                }
            },
            _content_type="application/strategic-merge-patch+json",
        )
        d = wait(
            lambda d: (
                progressing(d) and progressing(d).reason == "ProgressDeadlineExceeded"
            )
        )
        assert progressing(d).status == "False"
        assert (
            d.status.available_replicas == 3
        )  # old pods keep serving (maxUnavailable)


def test_pod_log_follow_and_tail(srv):
    api = kubernetes.client.CoreV1Api(sync_client(srv))
    srv.store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "job", "namespace": "demo"},
            "spec": {"containers": [{"name": "step", "image": "alpine"}]},
        }
    )
    srv.store.patch_status("pods", "demo", "job", {"phase": "Running"})
    srv.set_pod_log("demo", "job", "one\ntwo\nthree\n")
    assert api.read_namespaced_pod_log("job", "demo", tail_lines=2) == "two\nthree\n"

    def feed():
        time.sleep(0.2)
        srv.append_pod_log("demo", "job", "four")
        time.sleep(0.2)
        srv.store.patch_status("pods", "demo", "job", {"phase": "Succeeded"})

    threading.Thread(target=feed, daemon=True).start()
    resp = api.read_namespaced_pod_log(
        "job", "demo", follow=True, _preload_content=False
    )
    assert resp.data.decode() == "one\ntwo\nthree\nfour\n"


async def test_asyncio_watch_bookmarks_and_resume():
    with FakeKubeServer(bookmark_interval=0.2) as srv:
        srv.store.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
        )
        cfg = kubernetes_asyncio.client.Configuration()
        await kubernetes_asyncio.config.load_kube_config_from_dict(
            srv.kubeconfig(), client_configuration=cfg
        )
        async with kubernetes_asyncio.client.ApiClient(cfg) as client:
            api = kubernetes_asyncio.client.CoreV1Api(client)
            pods = await api.list_namespaced_pod("demo")
            rv = pods.metadata.resource_version

            def make(name):
                srv.store.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": name, "namespace": "demo"},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                    }
                )

            loop = asyncio.get_running_loop()
            loop.call_later(0.1, make, "a")
            seen, bookmarks = [], 0
            w = kubernetes_asyncio.watch.Watch()
            async with w.stream(
                api.list_namespaced_pod,
                "demo",
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=1,
            ) as stream:
                async for ev in stream:
                    if ev["type"] == "BOOKMARK":
                        bookmarks += 1
                        rv = ev["raw_object"]["metadata"]["resourceVersion"]
                    else:
                        seen.append((ev["type"], ev["object"].metadata.name))
                        rv = ev["object"].metadata.resource_version
            assert seen == [("ADDED", "a")] and bookmarks >= 2
            make("b")  # happens while disconnected
            async with w.stream(
                api.list_namespaced_pod,
                "demo",
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=1,
            ) as stream:
                async for ev in stream:
                    if ev["type"] != "BOOKMARK":
                        seen.append((ev["type"], ev["object"].metadata.name))
            assert seen == [
                ("ADDED", "a"),
                ("ADDED", "b"),
            ]  # resumed, nothing replayed twice


def test_populate_and_churn_are_fast_and_bounded():
    with FakeKubeServer() as srv:
        t0 = time.monotonic()
        srv.populate(nodes=500, pods=10000, namespaces=20, deployments=200)
        assert time.monotonic() - t0 < 15
        api = kubernetes.client.CoreV1Api(sync_client(srv))
        page = api.list_pod_for_all_namespaces(limit=500)
        assert len(page.items) == 500 and page.metadata.remaining_item_count == 9500
        rv = page.metadata.resource_version
        th = srv.churn(changes_per_second=100, duration=0.5)
        th.join(5)
        assert not th.is_alive()
        events = list(
            kubernetes.watch.Watch().stream(
                api.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=1
            )
        )
        assert 20 <= len(events) <= 80
