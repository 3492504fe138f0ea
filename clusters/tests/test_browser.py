"""A real browser sees a pod appear in the pods table, live."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from clusters import snapshot
from clusters.monitor import Monitor, Settings

from .factories import make_cluster, node, pod

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def wait_synced(cluster_id: int, seconds: float = 15) -> None:
    """Wait until the monitor has listed every kind of the cluster (not stale)."""
    deadline = time.monotonic() + seconds
    while snapshot.read_state(cluster_id).get("stale") != "0":
        assert time.monotonic() < deadline, "monitor did not sync"
        time.sleep(0.1)


class MonitorThread:
    """The monitor on its own event loop in a thread, with short test timings."""

    def __init__(self, **timings: float) -> None:
        self.timings = {
            "refresh_interval": 0.5,
            "flush_interval": 0.1,
            "probe_interval": 0.5,
            **timings,
        }
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            monitor = Monitor(
                settings.REDIS_URL,
                get_channel_layer(),
                Settings(**self.timings),
                identity="browser-test",
            )
            await monitor.run(self.stop_event)

        self.loop.run_until_complete(main())

    def start(self) -> MonitorThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


def test_pods_page_shows_a_new_pod_live(asgi_server, victor, fake, browser):
    from playwright.sync_api import expect

    fake.store.create(pod("existing", node_name="n1"))
    cluster = make_cluster(fake)
    monitor = MonitorThread().start()
    context = None
    try:
        wait_synced(cluster.pk)
        session = SessionStore()
        session[SESSION_KEY] = str(victor.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = victor.get_session_auth_hash()
        session.save()
        context = browser.new_context()
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": session.session_key,
                    "url": asgi_server.url,
                }
            ]
        )
        page = context.new_page()
        page.goto(f"{asgi_server.url}/clusters/{cluster.pk}/pods/")
        expect(page.locator('tr[data-key="demo/existing"]')).to_be_visible()
        expect(page.locator("[data-stale-ribbon]")).to_be_hidden(timeout=10000)
        expect(page.locator("#cluster-page[data-live-ready]")).to_have_count(
            1, timeout=10000
        )
        fake.store.create(pod("arrived-live", node_name="n1"))
        row = page.locator('tr[data-key="demo/arrived-live"]')
        expect(row).to_be_visible(timeout=10000)
        expect(row).to_contain_text("Running")
        fake.store.force_delete("pods", "demo", "existing")
        expect(page.locator('tr[data-key="demo/existing"]')).to_have_count(
            0, timeout=10000
        )
    finally:
        if context is not None:
            context.close()
        monitor.stop()


def _login(context, user, url: str) -> None:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session.session_key,
                "url": url,
            }
        ]
    )


def test_nodes_page_rebuilds_a_changed_node_live_and_keeps_its_pods(
    asgi_server, olivia, fake, browser
):
    from playwright.sync_api import expect

    fake.store.create(pod("a", node_name="n1"))
    fake.store.create(pod("b", node_name="n1"))
    cluster = make_cluster(fake)
    monitor = MonitorThread().start()
    context = None
    try:
        wait_synced(cluster.pk)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        _login(context, olivia, asgi_server.url)
        page = context.new_page()
        page.goto(f"{asgi_server.url}/clusters/{cluster.pk}/nodes/")
        row = page.locator('tr[data-key="n1"]')
        expect(row.locator("td").nth(3)).to_have_text("4 / 4")
        expect(row.locator("td").nth(4)).to_have_text("8Gi / 8Gi")
        expect(row.locator("td").nth(6)).to_have_text("2 / 110")
        expect(row.locator("td").nth(7)).to_have_text("healthy")
        expect(row.locator("button.node-cordon")).to_be_visible()
        expect(row.locator("button.node-uncordon")).to_be_hidden()
        expect(page.locator("#cluster-page[data-live-ready]")).to_have_count(
            1, timeout=10000
        )
        # kubectl cordon n1 elsewhere: the row is rebuilt from the new projection.
        fake.store.mutate(
            "nodes", None, "n1", lambda n: n["spec"].update(unschedulable=True)
        )
        expect(row.locator(".badge.status-warning")).to_have_text(
            "cordoned", timeout=10000
        )
        expect(row.locator("td").nth(3)).to_have_text("4 / 4")
        expect(row.locator("td").nth(6)).to_have_text("2 / 110")
        expect(row.locator("td.actions form")).to_have_count(1)
        # Cordoned: it offers uncordon now, not cordon.
        expect(row.locator("button.node-uncordon")).to_be_visible()
        expect(row.locator("button.node-cordon")).to_be_hidden()
        # A node that joins gets a row with a link to its pods.
        joining = node("n9")
        joining["metadata"]["labels"]["node-role.kubernetes.io/worker"] = ""
        fake.store.create(joining)
        new = page.locator('tr[data-key="n9"]')
        expect(new).to_be_visible(timeout=10000)
        expect(new.locator("td").nth(6).locator("a")).to_have_attribute(
            "href", f"/clusters/{cluster.pk}/pods/?node=n9"
        )
        expect(new.locator("td").nth(7)).to_have_text("healthy")
        expect(new.locator("td").first).to_have_text("n9worker")
        from .test_browser_overview import SHOTS

        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "cluster-nodes.png"))
    finally:
        if context is not None:
            context.close()
        monitor.stop()


def test_pod_logs_page_follows_the_log(asgi_server, victor, fake, browser):
    from playwright.sync_api import expect

    fake.store.create(pod("web-0", node_name="n1"))
    fake.set_pod_log("demo", "web-0", "booting\nlistening on :8080\n")
    cluster = make_cluster(fake)
    context = browser.new_context()
    try:
        _login(context, victor, asgi_server.url)
        page = context.new_page()
        page.goto(f"{asgi_server.url}/clusters/{cluster.pk}/pods/demo/web-0/logs/")
        log = page.locator("#pod-log")
        expect(log).to_have_text("booting\nlistening on :8080\n")
        fake.append_pod_log("demo", "web-0", "GET /healthz 200")
        expect(log).to_contain_text("GET /healthz 200", timeout=10000)
        # Follow off: what is written next is not fetched.
        page.locator("[data-log-follow]").uncheck()
        page.wait_for_timeout(300)  # Let a fetch already in flight land.
        fake.append_pod_log("demo", "web-0", "after follow stopped")
        page.wait_for_timeout(4500)  # Two polling periods.
        expect(log).not_to_contain_text("after follow stopped")
    finally:
        context.close()
