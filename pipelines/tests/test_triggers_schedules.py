"""Cron schedules: next times in the configured time zone, exactly-once ticks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from config.celery import app as celery_app
from pipelines import schedules, services
from pipelines.models import Repository, Run, Schedule

from .gitrepo import GitRepo


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def repository(tmp_path, settings) -> Repository:
    settings.SLIPWAY = {**settings.SLIPWAY, "MIRROR_DIR": tmp_path / "mirrors"}
    git = GitRepo(tmp_path / "src")
    git.commit({".slipway.yml": "nightly:\n  script: [echo $TARGET]\n"}, "first")
    git.git("branch", "release")
    return Repository.objects.create(name="sched", clone_url=str(git.path))


def make_schedule(repository: Repository, **fields: object) -> Schedule:
    values: dict[str, object] = {
        "description": "Nightly",
        "cron": "0 3 * * *",
        "branch": "main",
        "variables": {"TARGET": "staging"},
    }
    values.update(fields)
    return Schedule.objects.create(repository=repository, **values)


# --- compute_next ------------------------------------------------------------------


@pytest.mark.django_db
def test_next_time_follows_the_configured_time_zone(repository, settings) -> None:
    schedule = make_schedule(repository, cron="0 3 * * *")
    settings.TIME_ZONE = "UTC"
    assert schedules.compute_next(schedule, at("2025-01-10T12:00")) == at(
        "2025-01-11T03:00"
    )
    settings.TIME_ZONE = "Europe/Paris"
    # 03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer.
    assert schedules.compute_next(schedule, at("2025-01-10T12:00")) == at(
        "2025-01-11T02:00"
    )
    assert schedules.compute_next(schedule, at("2025-07-10T12:00")) == at(
        "2025-07-11T01:00"
    )
    assert schedules.compute_next(schedule, at("2025-07-10T12:00")).tzinfo == UTC


@pytest.mark.django_db
def test_next_time_across_a_daylight_saving_change(repository, settings) -> None:
    settings.TIME_ZONE = "Europe/Paris"
    schedule = make_schedule(repository, cron="30 12 * * *")
    # Clocks go forward on 2025-03-30: noon-thirty is 11:30 UTC before, 10:30 after.
    assert schedules.compute_next(schedule, at("2025-03-29T12:00")) == at(
        "2025-03-30T10:30"
    )
    assert schedules.compute_next(schedule, at("2025-03-28T12:00")) == at(
        "2025-03-29T11:30"
    )


@pytest.mark.parametrize(
    "cron", ["", "* * * *", "* * * * * *", "61 * * * *", "every day", "@reboot"]
)
def test_invalid_cron_is_refused(cron) -> None:
    with pytest.raises(ValueError):
        schedules.validate_cron(cron)


def test_cron_is_normalised() -> None:
    assert schedules.validate_cron("  */5   * *  * 1-5 ") == "*/5 * * * 1-5"


@pytest.mark.django_db
def test_refresh_next_run_sets_the_time_and_clears_it_when_disabled(
    repository,
) -> None:
    schedule = make_schedule(repository, cron="*/15 * * * *")
    schedules.refresh_next_run(schedule, at("2025-05-01T10:07"))
    assert Schedule.objects.get().next_run_at == at("2025-05-01T10:15")
    schedule.enabled = False
    schedules.refresh_next_run(schedule, at("2025-05-01T10:07"))
    assert Schedule.objects.get().next_run_at is None


# --- tick --------------------------------------------------------------------------


@pytest.mark.django_db
def test_tick_starts_due_schedules_once_with_their_branch_and_variables(
    repository,
) -> None:
    now = at("2025-05-01T03:00:10")
    due = make_schedule(repository, next_run_at=at("2025-05-01T03:00"))
    later = make_schedule(
        repository, description="Later", next_run_at=at("2025-05-01T04:00")
    )
    paused = make_schedule(
        repository,
        description="Paused",
        enabled=False,
        next_run_at=at("2025-05-01T02:00"),
    )
    started = schedules.tick(now)
    assert [run.pk for run in started] == [Run.objects.get().pk]
    run = Run.objects.get()
    assert (run.trigger, run.branch, run.ref, run.variables) == (
        "schedule",
        "main",
        "main",
        {"TARGET": "staging"},
    )
    due.refresh_from_db()
    assert due.last_run == run
    assert due.next_run_at == at("2025-05-02T03:00")
    later.refresh_from_db()
    paused.refresh_from_db()
    assert later.next_run_at == at("2025-05-01T04:00") and later.last_run is None
    assert paused.last_run is None
    # The same tick again, or a second beat with the same clock: nothing new.
    assert schedules.tick(now) == []
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_scheduled_run_starts_on_the_branch_head(repository) -> None:
    make_schedule(repository, branch="release", next_run_at=at("2025-05-01T03:00"))
    [run] = schedules.tick(at("2025-05-01T03:00"))
    services.start_run(run.pk)
    run.refresh_from_db()
    assert run.error == ""
    assert run.branch == "release" and len(run.commit_sha) == 40
    assert list(run.jobs.values_list("name", flat=True)) == ["nightly"]


@pytest.mark.django_db
def test_missed_times_run_once_then_continue_from_now(repository) -> None:
    schedule = make_schedule(
        repository, cron="0 * * * *", next_run_at=at("2025-05-01T00:00")
    )
    schedules.tick(at("2025-05-01T09:30"))  # Beat was down for nine hours.
    assert Run.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2025-05-01T10:00")


@pytest.mark.django_db
def test_schedule_without_a_next_time_gets_one_and_does_not_run(repository) -> None:
    schedule = make_schedule(repository, cron="0 6 * * *", next_run_at=None)
    assert schedules.tick(at("2025-05-01T07:00")) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2025-05-02T06:00")


@pytest.mark.django_db
def test_one_broken_schedule_does_not_stop_the_others(repository) -> None:
    bad = make_schedule(
        repository, description="Bad", cron="nonsense", next_run_at=at("2025-05-01")
    )
    good = make_schedule(repository, next_run_at=at("2025-05-01T03:00"))
    started = schedules.tick(at("2025-05-01T03:00"))
    assert len(started) == 1
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.last_run_id == started[0].pk
    assert bad.next_run_at is None and bad.last_run is None


@pytest.mark.django_db
def test_a_failing_trigger_leaves_the_schedule_due(repository, monkeypatch) -> None:
    schedule = make_schedule(repository, next_run_at=at("2025-05-01T03:00"))

    def broken(*args: object, **kwargs: object) -> Run:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(services, "trigger_run", broken)
    assert schedules.tick(at("2025-05-01T03:00")) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2025-05-01T03:00")  # The claim rolled back.
    monkeypatch.undo()
    assert len(schedules.tick(at("2025-05-01T03:01"))) == 1


@pytest.mark.django_db(transaction=True)
def test_overlapping_ticks_start_each_due_schedule_exactly_once(repository) -> None:
    for index in range(5):
        make_schedule(
            repository,
            description=f"s{index}",
            cron="*/5 * * * *",
            next_run_at=at("2025-05-01T03:00"),
        )
    now = at("2025-05-01T03:00:05")
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait(10)
            schedules.tick(now)
        except BaseException as exc:  # noqa: BLE001 - asserted below.
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert Run.objects.count() == 5
        assert sorted(Schedule.objects.values_list("last_run__number", flat=True)) == [
            1,
            2,
            3,
            4,
            5,
        ]
        assert set(Schedule.objects.values_list("next_run_at", flat=True)) == {
            at("2025-05-01T03:05")
        }
    finally:
        celery_app.control.purge()  # No workers here: drop the queued starts.


def test_beat_runs_the_trigger_tasks() -> None:
    beat = celery_app.conf.beat_schedule
    entries = {entry["task"]: entry["schedule"] for entry in beat.values()}
    assert entries["pipelines.tick_schedules"] == 30.0
    assert entries["pipelines.poll_repositories"] == 15.0
    assert "pipelines.expire_artifacts" in entries
    assert {
        "pipelines.tick_schedules",
        "pipelines.poll_repositories",
        "pipelines.expire_artifacts",
    } <= set(celery_app.tasks)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_tick_task_on_a_real_worker_starts_and_finishes_the_run(
    repository, workers
) -> None:
    from .waiting import wait_for

    # The workers have their own mirror directory; the repository path is shared.
    make_schedule(
        repository,
        next_run_at=datetime.now(UTC) - timedelta(minutes=1),
        variables={"TARGET": "from-beat"},
    )
    celery_app.send_task("pipelines.tick_schedules")
    run = wait_for(
        lambda: Run.objects.filter(status__in=Run.FINISHED).first(),
        timeout=60,
        message="the scheduled run to finish",
    )
    assert (run.trigger, run.status) == ("schedule", "success"), run.error
