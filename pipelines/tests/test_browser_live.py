"""A run watched live in the real browser: lines appear, then the final status."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import browser_login
from pipelines import services
from pipelines.models import Job, Repository

from .gitrepo import GitRepo
from .waiting import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

SLOW_COUNT = """
count:
  script:
    - 'for i in $(seq 1 40); do echo "tick $i"; sleep 0.1; done'
"""


def test_job_page_shows_lines_live_then_the_final_status(
    tmp_path, workers, asgi_server, browser, victor
) -> None:
    git = GitRepo(tmp_path / "live")
    git.commit({".slipway.yml": SLOW_COUNT})
    repository = Repository.objects.create(name="live", clone_url=str(git.path))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        browser_login(page, asgi_server.url, "victor")
        run = services.trigger_run(repository, ref="main")
        job = wait_for(
            lambda: Job.objects.filter(run=run, status="running").first(), 30
        )
        page.goto(f"{asgi_server.url}{job.get_absolute_url()}")
        # Lines arrive while the job still runs: the page was not reloaded.
        page.get_by_text("tick 3", exact=True).wait_for(timeout=15000)
        assert Job.objects.get(pk=job.pk).status == "running"
        page.get_by_text("tick 40", exact=True).wait_for(timeout=30000)
        expect(
            page.locator(f'.badge[data-status-for="job-{job.pk}"]').first
        ).to_contain_text("success", timeout=20000)
        text = page.inner_text("body")
        assert "tick 1" in text and "tick 40" in text
        assert Job.objects.get(pk=job.pk).status == "success"
        assert errors == []
    finally:
        page.close()
