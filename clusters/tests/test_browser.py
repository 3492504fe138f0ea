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

from .factories import make_cluster, pod

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


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
        deadline = time.monotonic() + 15
        while snapshot.read_state(cluster.pk).get("stale") != "0":
            assert time.monotonic() < deadline, "monitor did not sync"
            time.sleep(0.1)
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
