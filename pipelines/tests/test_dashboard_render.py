"""The dashboard's fast paths: rows rendered by tags, trends counted incrementally."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from pipelines import queries
from pipelines.tests.factories import make_job, make_repository, make_run, make_stage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    """Trends are cached in Redis: start each test without them."""
    cache.clear()


def test_run_rows_escape_every_value_and_keep_the_live_hooks(client, victor):
    repo = make_repository(name="web")
    run = make_run(
        repository=repo,
        status="running",
        branch='fix/<b>&"x"',
        commit_message="<script>alert(1)</script>\n\nbody",
        commit_author="Eve <eve@example.com>",
    )
    client.force_login(victor)
    for url in ("/", "/runs/", "/repos/web/"):
        body = client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in body, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, url
        assert "Eve &lt;eve@example.com&gt;" in body, url
        assert f'<tr data-run-id="{run.pk}">' in body, url
        assert f'data-status-for="run-{run.pk}">running</span>' in body, url
        assert f'data-duration-for="run-{run.pk}"' in body, url
        # The branch pill links to the repository filtered by the branch.
        assert (
            '/repos/web/?branch=fix/%3Cb%3E%26%22x%22" title="fix/&lt;b&gt;&amp;'
            in body
        )
    feed = client.get("/").content.decode().split('id="activity-feed"')[1]
    assert f'<li class="feed-item" data-run-id="{run.pk}">' in feed
    assert f'href="/runs/{run.pk}/">web #{run.number}</a>' in feed


def test_job_rows_show_the_action_that_fits_each_status(client, bob, victor):
    run = make_run(status="running")
    stage = make_stage(run, "build", 0)
    manual = make_job(run=run, stage=stage, name="deploy", status="manual")
    failed = make_job(
        run=run,
        stage=stage,
        name="unit",
        status="failed",
        exit_code=3,
        failure_reason="script failed",
    )
    client.force_login(bob)
    body = client.get(run.get_absolute_url()).content.decode()
    play = f'action="/jobs/{manual.pk}/play/" class="sw-inline-form" data-visible-for="job-{manual.pk}" data-visible-statuses="manual">'
    assert play in body  # Shown: the job waits for someone.
    retry = f'action="/jobs/{failed.pk}/retry/" class="sw-inline-form" data-visible-for="job-{failed.pk}" data-visible-statuses="failed canceled success">'
    assert retry in body
    assert (
        f'action="/jobs/{manual.pk}/retry/" class="sw-inline-form" data-visible-for="job-{manual.pk}" data-visible-statuses="failed canceled success" hidden>'
        in body
    )
    assert "Script failed · exit code 3" in body
    assert 'name="csrfmiddlewaretoken"' in body
    client.force_login(victor)
    body = client.get(run.get_absolute_url()).content.decode()
    assert f"/jobs/{manual.pk}/play/" not in body  # Viewers get no buttons.
    assert f'data-status-for="job-{manual.pk}">manual</span>' in body


def test_trends_count_earlier_days_from_the_hour_cache_and_today_afresh():
    repo = make_repository(name="web")
    now = timezone.now()
    today_start = timezone.make_aware(
        timezone.datetime.combine(timezone.localdate(), timezone.datetime.min.time())
    )
    earlier = today_start - timedelta(days=2, hours=-3)
    make_run(repository=repo, status="success", created_at=earlier)
    make_run(
        repository=repo,
        status="failed",
        created_at=max(today_start, now - timedelta(seconds=5)),
    )
    overall, trends = queries.trends()
    assert overall.totals[-1] == 1 and overall.totals[-3] == 1
    assert trends[0].repository == "web"

    # A minute later: today's runs are counted again, earlier days come from the cache.
    make_run(
        repository=repo,
        status="success",
        created_at=max(today_start, now - timedelta(seconds=4)),
    )
    make_run(repository=repo, status="success", created_at=earlier)
    cache.delete(f"pipelines:trends:{queries.TREND_DAYS}:8")
    overall, _ = queries.trends()
    assert overall.totals[-1] == 2
    assert overall.totals[-3] == 1

    # When the hour is up, the earlier days are counted again too.
    cache.clear()
    overall, trends = queries.trends()
    assert overall.totals[-3] == 2
    assert overall.successes[-3] == 2 and overall.failures[-1] == 1
    assert trends[0].total == 4


def test_trends_card_follows_the_figures(client, victor):
    repo = make_repository(name="web")
    make_run(repository=repo, status="success")
    client.force_login(victor)
    first = client.get("/").content.decode()
    assert "1 run (1 passed, 0 failed)" in first
    make_run(repository=repo, status="failed")
    cache.clear()
    second = client.get("/").content.decode()
    assert "2 runs (1 passed, 1 failed)" in second


def test_trends_count_again_when_the_cached_days_belong_to_other_repositories():
    old = make_repository(name="old")
    today_start = timezone.make_aware(
        timezone.datetime.combine(timezone.localdate(), timezone.datetime.min.time())
    )
    earlier = today_start - timedelta(days=1, hours=-2)
    make_run(repository=old, status="failed", created_at=earlier)
    assert queries.trends()[1][0].repository == "old"
    old.delete()  # Or a restored database: the cached days counted other rows.
    new = make_repository(name="new")
    make_run(repository=new, status="success", created_at=earlier)
    cache.delete(f"pipelines:trends:{queries.TREND_DAYS}:8")
    overall, trends = queries.trends()
    assert [t.repository for t in trends] == ["new"]
    assert overall.successes[-2] == 1 and overall.failures[-2] == 0


def test_trends_ignore_a_cached_value_of_another_shape():
    """An older release may have left another format under the key: count again."""
    repo = make_repository(name="web")
    make_run(repository=repo, status="success")
    window = [
        timezone.localdate() - timedelta(days=queries.TREND_DAYS - 1 - i)
        for i in range(queries.TREND_DAYS)
    ]
    zone = timezone.get_current_timezone_name()
    key = f"pipelines:trend-days:2:{zone}:{window[0]}:{window[-1]}"
    cache.set(key, [(1, window[0], 5, 5, 0, 1.0)], 60)
    overall, trends = queries.trends()
    assert overall.total == 1 and trends[0].repository == "web"
