"""Walk every dashboard page in the real Chromium, logged in through the login form.

Each page must render without console errors or CSP violations; the main pages are
photographed (1280x800, light, plus dark and phone views) into $SLIPWAY_SCREENSHOTS,
a temporary folder by default. Refresh the README's pictures with
``SLIPWAY_SCREENSHOTS=docs/screenshots pytest pipelines/tests/test_dashboard_browser.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from pipelines.tests.factories import seed_demo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(
    os.environ.get(
        "SLIPWAY_SCREENSHOTS", Path(tempfile.gettempdir()) / "slipway-screenshots"
    )
)


@pytest.fixture
def demo(transactional_db):
    """Seed the data before Playwright starts (its loop forbids sync ORM calls)."""
    return seed_demo()


class Console:
    """Collect console errors, page errors and CSP violations of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            location = msg.location.get("url", "") if msg.location else ""
            self.errors.append(f"{msg.text} ({location})")


def login(page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(250)  # Let relative times, charts and the graph settle.
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_every_page_renders_cleanly_and_is_photographed(
    asgi_server, alice, demo, workers, browser
):
    """Walk the main pages; two real workers are online, as the overview shows."""
    rows = demo
    base = asgi_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = Console(page)
    login(page, base, "alice")

    failed_run = rows["failed_run"]
    failed_job = rows["failed_job"]
    running_run = rows["running_run"]
    running_job = rows["running_job"]
    broken_run = rows["broken_run"]

    # Overview: stats, live sections, trends.
    page.goto(f"{base}/")
    page.wait_for_selector("#active-runs")
    page.wait_for_selector(".sw-trend .chart svg")
    assert page.locator("#active-runs tbody tr").count() >= 2
    assert page.locator("#recent-runs tbody tr").count() >= 10
    assert page.locator("#activity-feed .feed-item").count() >= 5
    # The real workers' heartbeats reach the overview's stat card.
    page.goto(f"{base}/workers/")
    assert page.locator("#workers tbody tr").count() >= len(workers)
    page.goto(f"{base}/")
    page.wait_for_selector(".sw-trend .chart svg")
    shoot(page, "overview")
    page.locator(".sw-trend").last.scroll_into_view_if_needed()
    shoot(page, "overview-trends")

    # Repositories list and each repository tab.
    page.goto(f"{base}/repos/")
    assert page.locator("tbody tr").count() == 4
    page.goto(f"{base}/repos/web/")
    page.wait_for_selector("#run-table tbody tr")
    shoot(page, "repository")
    # htmx filter: pick "failed" and the table swaps in place.
    page.select_option("select[name=status]", "failed")
    page.wait_for_url("**status=failed**")
    # Waits poll from Python (expect): a string predicate that Playwright polls in
    # the page is an eval, which the pages' CSP refuses.
    badges = page.locator("#run-table tbody .badge")
    expect(badges.filter(has_not_text="failed")).to_have_count(0)
    assert badges.count() > 0
    for tab in (
        "branches",
        "webhooks",
        "deliveries",
        "schedules",
        "variables",
        "settings",
        "run",
    ):
        page.goto(f"{base}/repos/web/{tab}/")
        assert page.locator("h1").first.inner_text() == "web"
    page.goto(f"{base}/repos/web/webhooks/")
    shoot(page, "repository-webhook")
    page.goto(f"{base}/repos/web/webhooks/?forge=generic")
    assert "Authorization: Bearer" in page.inner_text("#curl-example")
    page.goto(f"{base}/repos/web/variables/")
    assert "s3cr3t-token" not in page.content()

    # Runs list with a page of older runs.
    page.goto(f"{base}/runs/")
    assert page.locator("#run-table tbody tr").count() == 50
    page.click("text=Older ›")
    page.wait_for_url("**before=**")

    # Run pages: a failed pipeline, a live one, and one whose file was invalid.
    page.goto(f"{base}{failed_run.get_absolute_url()}")
    page.wait_for_selector(".pg-job")
    assert page.locator(".pg-job").count() == 6
    assert page.locator(".pg-edge").count() >= 2
    page.goto(f"{base}{running_run.get_absolute_url()}")
    page.wait_for_selector(".pg-job.status-running")
    shoot(page, "run")
    page.goto(f"{base}{broken_run.get_absolute_url()}")
    assert "unknown stage" in page.inner_text("#run-error")

    # Job pages: the stored log shows in the viewer.
    page.goto(f"{base}{failed_job.get_absolute_url()}")
    page.wait_for_selector(".lv-line")
    expect(page.locator("#job-log")).to_contain_text("AssertionError")
    shoot(page, "job")
    raw = page.request.get(f"{base}/jobs/{failed_job.pk}/log.txt")
    assert raw.ok and raw.headers["content-type"].startswith("text/plain")
    assert "AssertionError" in raw.text() and raw.text().endswith(
        "exit code 1\x1b[0m\n"
    )
    page.goto(f"{base}{running_job.get_absolute_url()}")
    page.wait_for_selector(".lv-line")

    # Errors inside the layout.
    response = page.goto(f"{base}/runs/999999/")
    assert response.status == 404
    assert page.locator(".error-page").count() == 1

    # The dark theme.
    page.emulate_media(color_scheme="dark")
    page.goto(f"{base}/")
    page.wait_for_selector(".sw-trend .chart svg")
    shoot(page, "overview-dark")
    page.goto(f"{base}{failed_run.get_absolute_url()}")
    page.wait_for_selector(".pg-job")
    shoot(page, "run-dark")

    # A phone.
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}{failed_run.get_absolute_url()}")
    page.wait_for_selector(".pg-job")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(page, "run-phone")

    # Only the deliberate 404 above may complain.
    errors = [e for e in console.errors if "404" not in e or "/runs/999999/" not in e]
    assert errors == [], "\n".join(sorted(set(errors)))
    context.close()


def publish(func, *args) -> None:
    """Publish an event from another thread (Playwright's loop owns this one)."""
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            func(*args)
        except BaseException as exc:  # Re-raised below in the test's thread.
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    if errors:
        raise errors[0]


def wait_connected(page) -> None:
    page.wait_for_selector("[data-live-dot][title^='Connected']")


def test_run_page_and_overview_update_live(asgi_server, alice, demo, browser):
    from pipelines import events

    base = asgi_server.url
    run = demo["running_run"]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = Console(page)
    login(page, base, "alice")

    page.goto(f"{base}{run.get_absolute_url()}")
    page.wait_for_selector(".pg-job")
    wait_connected(page)
    e2e = demo["pending_job"]
    e2e.status = "running"
    e2e.reason = ""
    publish(events.job_changed, e2e)
    page.wait_for_selector(f".pg-job.status-running[data-job-id='{e2e.pk}']")
    page.wait_for_selector(f"#run-jobs [data-status-for='job-{e2e.pk}'].status-running")

    run.status = "canceled"
    publish(events.run_changed, run)
    page.wait_for_selector(
        f".badge-lg[data-status-for='run-{run.pk}'].status-canceled, "
        f".badge[data-status-for='run-{run.pk}'].status-canceled"
    )
    assert page.locator("form[action$='/cancel/'][data-visible-for]").first.is_hidden()

    page.goto(f"{base}/")
    wait_connected(page)
    run.status = "success"
    publish(events.run_changed, run)
    expect(page.locator("#activity-feed .feed-item").first).to_have_attribute(
        "data-run-id", str(run.pk)
    )
    assert "success" in page.inner_text("#activity-feed .feed-item >> nth=0")
    assert console.errors == []
    context.close()
