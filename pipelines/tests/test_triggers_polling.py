"""Polling: real repositories, the runs as the truth, Redis as the cache of heads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from config.celery import app as celery_app
from pipelines import logs, polling, services
from pipelines.models import Repository, Run

from .gitrepo import GitRepo


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def redis():
    client = logs.redis_client()

    def clean() -> None:
        for pattern in ("slipway:poll:*", "slipway:poll-lock:*"):
            for key in client.scan_iter(pattern):
                client.delete(key)

    clean()
    yield client
    clean()


@pytest.fixture
def git(tmp_path: Path, settings) -> GitRepo:
    settings.SLIPWAY = {**settings.SLIPWAY, "MIRROR_DIR": tmp_path / "mirrors"}
    repo = GitRepo(tmp_path / "src")
    repo.commit({".slipway.yml": "build:\n  script: [true]\n"}, "first")
    repo.git("branch", "old-feature")
    return repo


def make_repository(git: GitRepo, **fields: object) -> Repository:
    values: dict[str, object] = {
        "name": "polled",
        "clone_url": str(git.path),
        "poll_interval": 60,
    }
    values.update(fields)
    return Repository.objects.create(**values)


def runs() -> list[tuple[str, str, str, str]]:
    return [
        (r.trigger, r.branch, r.commit_sha, r.before_sha)
        for r in Run.objects.order_by("pk")
    ]


def poll(repository: Repository, redis, **kwargs: object) -> polling.PollResult:
    repository.refresh_from_db()
    result = polling.poll(repository, redis, **kwargs)
    Repository.objects.filter(pk=repository.pk).update(last_polled_at=datetime.now(UTC))
    return result


@pytest.mark.django_db
def test_first_poll_runs_only_the_default_branch_that_never_ran(git, redis) -> None:
    repository = make_repository(git)
    main = git.head()
    result = poll(repository, redis)
    assert result.error == ""
    assert result.heads == {"main": main, "old-feature": main}
    assert runs() == [("poll", "main", main, "")]
    # The heads are cached; old branches were only recorded.
    cached = redis.hgetall(polling.cache_key(repository.pk))
    assert cached[b"old-feature"] == main.encode()


@pytest.mark.django_db
def test_first_poll_of_a_default_branch_that_ran_starts_nothing(git, redis) -> None:
    repository = make_repository(git)
    services.trigger_run(repository, ref="main", sha=git.head())
    poll(repository, redis)
    assert [r[0] for r in runs()] == ["manual"]


@pytest.mark.django_db
def test_new_commits_new_branches_and_nothing_new(git, redis) -> None:
    repository = make_repository(git)
    first = git.head()
    poll(repository, redis)
    assert len(runs()) == 1

    # Nothing changed: nothing runs.
    assert poll(repository, redis).runs == []

    # A commit on main: one run from the old head to the new one.
    second = git.commit({"a.txt": "1"}, "second")
    assert [r.branch for r in poll(repository, redis).runs] == ["main"]
    assert runs()[-1] == ("poll", "main", second, first)

    # A new branch: one run; the untouched old branch still runs nothing.
    git.git("checkout", "-q", "-b", "feature/x")
    feature = git.commit({"b.txt": "1"}, "feature")
    assert [r.branch for r in poll(repository, redis).runs] == ["feature/x"]
    assert runs()[-1] == ("poll", "feature/x", feature, "")
    assert poll(repository, redis).runs == []

    # A deleted branch leaves the cache; two branches moving start two runs.
    git.git("branch", "-D", "old-feature")
    git.commit({"b.txt": "2"}, "feature 2")
    git.git("checkout", "-q", "main")
    git.commit({"a.txt": "2"}, "main 3")
    assert sorted(r.branch for r in poll(repository, redis).runs) == [
        "feature/x",
        "main",
    ]
    assert b"old-feature" not in redis.hgetall(polling.cache_key(repository.pk))
    assert len(runs()) == 5


@pytest.mark.django_db
def test_branch_filter_limits_polled_branches(git, redis) -> None:
    repository = make_repository(git, branch_filter="main,release/*")
    poll(repository, redis)
    git.git("checkout", "-q", "-b", "scratch")
    git.commit({"s": "1"})
    git.git("checkout", "-q", "-b", "release/2.0")
    release = git.commit({"r": "1"})
    result = poll(repository, redis)
    assert [(r.branch, r.commit_sha) for r in result.runs] == [("release/2.0", release)]


@pytest.mark.django_db
def test_a_head_that_already_ran_starts_nothing(git, redis) -> None:
    # A webhook (or a person) ran the new commit already: polling adds nothing.
    repository = make_repository(git)
    poll(repository, redis)
    new = git.commit({"w": "1"})
    services.trigger_run(repository, trigger="push", ref="refs/heads/main", sha=new)
    assert poll(repository, redis).runs == []


@pytest.mark.django_db
def test_lost_cache_compares_with_the_runs_and_starts_no_storm(git, redis) -> None:
    repository = make_repository(git)
    poll(repository, redis)
    git.git("branch", "another-old-one")
    redis.delete(polling.cache_key(repository.pk))  # Redis restarted empty.
    # Unchanged: nothing runs, not even for branches that never ran.
    assert poll(repository, redis).runs == []
    # Main moved while the cache was gone: its latest run tells.
    previous = git.head()
    new = git.commit({"m": "1"})
    redis.delete(polling.cache_key(repository.pk))
    assert [
        (r.branch, r.commit_sha, r.before_sha) for r in poll(repository, redis).runs
    ] == [("main", new, previous)]


@pytest.mark.django_db
def test_fetch_error_is_reported_and_starts_nothing(tmp_path, redis, settings) -> None:
    settings.SLIPWAY = {**settings.SLIPWAY, "MIRROR_DIR": tmp_path / "mirrors"}
    repository = Repository.objects.create(
        name="gone", clone_url=str(tmp_path / "missing"), poll_interval=60
    )
    result = polling.poll(repository, redis)
    assert "failed" in result.error
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_held_lock_skips_the_poll(git, redis) -> None:
    repository = make_repository(git)
    redis.set(polling.lock_key(repository.pk), "someone-else")
    result = polling.poll(repository, redis)
    assert result.error == "another poll of this repository is running"
    assert not Run.objects.exists()


# --- due, claim, poll_due ----------------------------------------------------------


@pytest.mark.django_db
def test_poll_due_respects_each_interval_and_records_the_time(git, redis) -> None:
    now = at("2025-05-01T12:00")
    fresh = make_repository(
        git, name="fresh", last_polled_at=now - timedelta(seconds=30)
    )
    stale = make_repository(
        git, name="stale", last_polled_at=now - timedelta(seconds=61)
    )
    never = make_repository(git, name="never", last_polled_at=None)
    off = make_repository(git, name="off", poll_interval=0)
    polled = {result.repository_id for result in polling.poll_due(now)}
    assert polled == {stale.pk, never.pk}
    for repository in (fresh, stale, never, off):
        repository.refresh_from_db()
    assert fresh.last_polled_at == now - timedelta(seconds=30)
    assert stale.last_polled_at == now and never.last_polled_at == now
    assert off.last_polled_at is None
    # "never" polled for the first time: its default branch ran; "stale" had been
    # polled before but its cache is empty and main never ran: nothing.
    assert [r.repository_id for r in Run.objects.all()] == [never.pk]
    assert polling.poll_due(now + timedelta(seconds=10)) == []


@pytest.mark.django_db
def test_claim_succeeds_once_per_read(git) -> None:
    repository = make_repository(git)
    now = at("2025-05-01T12:00")
    copy = Repository.objects.get(pk=repository.pk)
    assert polling.claim(repository, now) is True
    assert polling.claim(copy, now + timedelta(seconds=1)) is False


@pytest.mark.django_db(transaction=True)
def test_concurrent_pollers_poll_a_repository_once(git, redis) -> None:
    repository = make_repository(git)
    now = at("2025-05-01T12:00")
    barrier = threading.Barrier(4)
    results: list[list[polling.PollResult]] = []
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait(10)
            results.append(polling.poll_due(now))
        except BaseException as exc:  # noqa: BLE001 - asserted below.
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert sum(len(r) for r in results) == 1
        assert runs() == [("poll", "main", git.head(), "")]
        repository.refresh_from_db()
        assert repository.last_polled_at == now
    finally:
        celery_app.control.purge()  # No workers here: drop the queued start.


@pytest.mark.django_db
def test_poll_task_counts_the_runs_it_started(git, redis) -> None:
    from pipelines import trigger_tasks

    make_repository(git)
    assert trigger_tasks.poll_repositories.apply().get() == 1
    assert trigger_tasks.poll_repositories.apply().get() == 0
