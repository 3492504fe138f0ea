"""The pods page in a real browser: pages and filters swap only the table."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from clusters import snapshot

from .factories import make_cluster

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def login_cookie(user: object, url: str) -> dict[str, str]:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)  # type: ignore[attr-defined]
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()  # type: ignore[attr-defined]
    session.save()
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": session.session_key,
        "url": url,
    }


def test_pods_page_pages_and_filters_in_place_with_actions_on_every_row(
    asgi_server, olivia, fake, browser
):
    from playwright.sync_api import expect

    cluster = make_cluster(fake)
    snapshot.write_objects(
        cluster.pk,
        "pods",
        {
            f"demo/p{i:03d}": {
                "name": f"p{i:03d}",
                "namespace": "demo",
                "phase": "Running",
                "ready": "1/1",
                "restarts": 0,
                "node": "n1",
                "owner": f"ReplicaSet/rs-{i % 3}",
                "containers": ["app"],
            }
            for i in range(150)
        },
    )
    snapshot.client().hset(
        snapshot.state_key(cluster.pk),
        mapping={"stale": "0", "reachable": "1", "metrics": "none"},
    )
    context = browser.new_context()
    try:
        context.add_cookies([login_cookie(olivia, asgi_server.url)])
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        base = f"{asgi_server.url}/clusters/{cluster.pk}/pods/"
        page.goto(base)
        rows = page.locator("#pod-table tr[data-key]")
        expect(rows).to_have_count(100)
        # The server sends empty action cells; every row gets its buttons.
        expect(page.locator("#pod-table td.actions button")).to_have_count(100)
        expect(
            page.locator('tr[data-key="demo/p000"] a', has_text="Logs")
        ).to_have_attribute("href", f"/clusters/{cluster.pk}/pods/demo/p000/logs/")

        # Next page: the table is swapped and the address follows; no reload.
        page.evaluate("window.notReloaded = true")
        page.locator("#pod-table nav.pagination a", has_text="Next").click()
        expect(page.locator('tr[data-key="demo/p149"]')).to_be_visible()
        expect(rows).to_have_count(50)
        expect(page.locator("#pod-table td.actions button")).to_have_count(50)
        assert page.url.endswith("page=2")
        assert page.evaluate("window.notReloaded") is True

        # Search, in place as well.
        page.fill('input[name="q"]', "rs-1")
        page.locator("[data-pod-filters] button[type=submit]").click()
        expect(rows).to_have_count(50)
        expect(page.locator("[data-matching]")).to_have_text("50")
        assert "q=rs-1" in page.url
        assert page.evaluate("window.notReloaded") is True

        # An action comes back to the page shown now, not the one first loaded.
        page.locator('tr[data-key="demo/p001"] button', has_text="Delete").click()
        page.wait_for_load_state()
        expect(page.locator(".flash")).to_be_visible()
        assert "q=rs-1" in page.url
    finally:
        context.close()
