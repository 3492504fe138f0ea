"""Walk the pages the main dashboard test does not: workers, clusters, environments,
tokens, the audit log, the API docs and the admin, in the real Chromium.

Each page must answer 200 without console errors or CSP violations and show the rows
the test created. The cluster pages read the monitor's snapshot of the fake
Kubernetes API server (clusters/fakekube), filled by a real monitor as the cluster
browser tests do. The pods and environment pages are photographed into
$SLIPWAY_SCREENSHOTS (a temporary folder by default), as the main dashboard test does.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import browser_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(
    os.environ.get(
        "SLIPWAY_SCREENSHOTS", Path(tempfile.gettempdir()) / "slipway-screenshots"
    )
)


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(250)  # Let relative times settle.
    page.screenshot(path=str(SHOTS / f"{name}.png"))


CSP_LISTENER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


class Watch:
    """Collect console errors, page errors and CSP violations of a page."""

    def __init__(self, context, page) -> None:
        self.page = page
        self.errors: list[str] = []
        context.add_init_script(CSP_LISTENER)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            location = msg.location.get("url", "") if msg.location else ""
            self.errors.append(f"{msg.text} ({location})")

    def visit(self, url: str) -> None:
        """Open URL; it must answer 200 and leave no error behind."""
        response = self.page.goto(url)
        assert response is not None and response.status == 200, (url, response)
        self.page.wait_for_load_state("load")
        self.check(url)

    def check(self, url: str) -> None:
        violations = self.page.evaluate("window.__csp || []")
        assert violations == [], (url, violations)
        assert self.errors == [], (url, self.errors)


def hpa(name: str, target: str) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target,
            },
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "selector": {"app": name},
            "ports": [{"port": 80, "targetPort": 8080}],
            "type": "ClusterIP",
        },
    }


def claim(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
        "status": {"phase": "Bound"},
    }


def event(name: str, obj: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "demo"},
        "involvedObject": {"kind": "Pod", "name": obj, "namespace": "demo"},
        "reason": "Scheduled",
        "message": f"Successfully assigned demo/{obj} to n1",
        "type": "Normal",
        "count": 1,
    }


@pytest.fixture
def fake() -> Iterator[object]:
    """A fake API server with a deployment, its pods, a service, a claim, an HPA."""
    from clusters import snapshot
    from clusters.fakekube import FakeKubeServer
    from clusters.tests.factories import deployment, namespace, node, pod

    r = snapshot.client()
    for key in r.scan_iter(match="slipway:cluster:*", count=1000):
        r.delete(key)
    r.delete("slipway:monitor:lock")
    with FakeKubeServer(bookmark_interval=1.0) as server:
        server.store.create(namespace("demo"))
        server.store.create(node("n1"))
        server.store.create(node("n2"))
        for app, hash_, replicas in (
            ("checkout", "7d4b9", 2),
            ("cart", "5f8c2", 3),
            ("search", "9a1e7", 2),
        ):
            server.store.create(deployment(app, replicas=replicas))
            owner = {"kind": "ReplicaSet", "name": f"{app}-{hash_}"}
            for i in range(replicas):
                server.store.create(
                    pod(
                        f"{app}-{hash_}-{i}",
                        node_name="n1" if i % 2 == 0 else "n2",
                        labels={"app": app},
                        owner=owner,
                    )
                )
        waiting = pod("migrate-db", phase="Pending")
        waiting["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        waiting["status"]["containerStatuses"][0].update(
            ready=False, state={"waiting": {"reason": "ContainerCreating"}}
        )
        server.store.create(waiting)
        server.store.create(service("checkout"))
        server.store.create(claim("checkout-data"))
        server.store.create(hpa("checkout", "checkout"))
        server.store.create(event("checkout-7d4b9-0.1", "checkout-7d4b9-0"))
        yield server


def test_walk_workers_clusters_environments_tokens_audit_api_and_admin(
    asgi_server, alice, fake, browser
):
    from django.utils import timezone
    from playwright.sync_api import expect

    from clusters.tests.factories import make_cluster
    from clusters.tests.test_browser import MonitorThread, wait_synced
    from core import audit, tokens
    from pipelines import workers
    from pipelines.models import Deployment, Environment
    from pipelines.tests.factories import make_repository, make_run

    cluster = make_cluster(fake, name="production-eu")
    repo = make_repository(name="shop")
    run = make_run(repository=repo, status="success", branch="main")
    staging = Environment.objects.create(
        repository=repo, name="staging", cluster=cluster, namespace="demo"
    )
    Environment.objects.create(
        repository=repo,
        name="production",
        cluster=cluster,
        namespace="shop-prod",
        protected=True,
    )
    for image, status, message in (
        ("shop:1.3.2", "success", ""),
        ("shop:1.4.0", "failed", "deployment/checkout: 0 of 2 pods ready"),
        ("shop:1.4.1", "success", ""),
        ("shop:1.5.0", "success", ""),
    ):
        sha = hashlib.sha1(image.encode()).hexdigest()
        Deployment.objects.create(
            environment=staging,
            status=status,
            message=message,
            run=run,
            user=alice,
            commit_sha=sha,
            ref="main",
            namespace="demo",
            images=[image],
            manifests=f"kind: Deployment\nimage: {image}\n",
            finished_at=timezone.now(),
        )
    tokens.create_token(alice, name="ci-script", scope="read", expires_at=None)
    audit.record("repository.create", actor=alice, target=repo, source="ui")
    workers.publish("walk-worker@test", ["default"], {"shell": ""}, 4, 0)

    monitor = MonitorThread().start()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        wait_synced(cluster.pk)
        page = context.new_page()
        watch = Watch(context, page)
        base = asgi_server.url
        browser_login(page, base, "alice")

        watch.visit(f"{base}/workers/")
        expect(page.locator("h1")).to_have_text("Workers")
        expect(page.locator("tbody tr", has_text="walk-worker@test")).to_have_count(1)

        watch.visit(f"{base}/clusters/")
        expect(page.locator("h1")).to_have_text("Clusters")
        expect(page.get_by_text("production-eu").first).to_be_visible()

        c = f"{base}/clusters/{cluster.pk}"
        watch.visit(f"{c}/")
        expect(page.locator("h1").first).to_contain_text("production-eu")
        expect(page.locator("h1 [data-cluster-health]")).to_have_text("reachable")
        watch.visit(f"{c}/nodes/")
        expect(page.locator('tr[data-key="n1"]')).to_be_visible()
        watch.visit(f"{c}/pods/")
        expect(page.locator('tr[data-key="demo/checkout-7d4b9-0"]')).to_be_visible()
        expect(page.locator('tr[data-key="demo/checkout-7d4b9-1"]')).to_contain_text(
            "Running"
        )
        expect(page.locator('tr[data-key="demo/migrate-db"]')).to_contain_text(
            "Pending"
        )
        shoot(page, "cluster-pods")
        watch.visit(f"{c}/workloads/")
        expect(page.locator('tr[data-key="demo/checkout"]')).to_be_visible()
        watch.visit(f"{c}/services/")
        expect(page.locator('tr[data-key="demo/checkout"]')).to_contain_text("80")
        watch.visit(f"{c}/storage/")
        expect(page.locator('tr[data-key="demo/checkout-data"]')).to_be_visible()
        watch.visit(f"{c}/autoscaling/")
        expect(page.locator('tr[data-key="demo/checkout"]')).to_contain_text(
            "Deployment"
        )
        watch.visit(f"{c}/events/")
        expect(page.locator("table[data-live-table=events] tbody")).to_contain_text(
            "Successfully assigned demo/checkout-7d4b9-0"
        )
        watch.visit(f"{c}/yaml/deployments/demo/checkout/")
        expect(page.locator("#object-yaml")).to_contain_text("name: checkout")
        expect(page.locator("#object-yaml")).to_contain_text("nginx:1.27")

        watch.visit(f"{base}/environments/")
        expect(page.locator("h1")).to_contain_text("Environments")
        expect(page.locator("tbody tr", has_text="staging")).to_have_count(1)
        watch.visit(f"{base}/environments/shop/")
        expect(page.locator("h1")).to_contain_text("shop")
        expect(page.locator("tbody tr", has_text="staging")).to_have_count(1)
        expect(
            page.locator("tbody").get_by_role("link", name="production", exact=True)
        ).to_have_count(1)
        watch.visit(f"{base}{staging.get_absolute_url()}")
        expect(page.locator("h1")).to_contain_text("staging")
        expect(page.locator(".card", has_text="Current version")).to_contain_text(
            "shop:1.5.0"
        )
        history = page.locator(".card", has_text="Deployments").locator("tbody tr")
        expect(history).to_have_count(4)
        shoot(page, "environment")
        latest = Deployment.objects.filter(environment=staging).latest("pk")
        watch.visit(f"{base}{staging.get_absolute_url()}deployments/{latest.pk}/")
        expect(page.locator("h1")).to_contain_text(f"Deployment #{latest.pk}")

        watch.visit(f"{base}/settings/tokens/")
        expect(page.locator("h1")).to_have_text("API tokens")
        expect(page.locator("tbody tr", has_text="ci-script")).to_have_count(1)

        watch.visit(f"{base}/audit/")
        expect(page.locator("h1")).to_have_text("Audit log")
        expect(page.locator("tbody tr", has_text="repository.create")).to_have_count(1)

        watch.visit(f"{base}/api/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_be_visible(timeout=10000)
        watch.check(f"{base}/api/docs/")

        watch.visit(f"{base}/admin/")
        expect(page.locator("#content h1")).to_contain_text("administration")
        for path, text in (
            ("pipelines/repository/", "shop"),
            ("pipelines/run/", "main"),
            ("pipelines/environment/", "shop-prod"),
            ("pipelines/deployment/", "staging"),
            ("clusters/cluster/", "production-eu"),
            ("core/auditevent/", "repository.create"),
            ("core/apitoken/", "ci-script"),
        ):
            watch.visit(f"{base}/admin/{path}")
            expect(page.locator("#result_list tbody tr").first).to_contain_text(text)
        watch.check("end")
        # The listener hears violations: an inline script the CSP refuses is one.
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.__ran = 1'; document.head.appendChild(s); }"
        )
        # Polled from Python: a predicate polled in the page is an eval (refused).
        deadline = time.monotonic() + 5
        while not page.evaluate("window.__csp.length") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert page.evaluate("window.__csp.length") > 0
        assert page.evaluate("window.__ran") is None
    finally:
        context.close()
        monitor.stop()
        from pipelines import logs

        client = logs.redis_client()
        client.hdel(workers.REGISTRY_KEY, "walk-worker@test")
        client.close()
