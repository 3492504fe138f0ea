"""The engine end to end: real git, real Celery workers, real Redis, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import logs, services
from pipelines.models import Artifact, Job, Repository, Run, Variable

from .gitrepo import GitRepo
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PIPELINE = """
stages: [build, test, deploy]
compile:
  stage: build
  script:
    - mkdir -p out && echo binary > out/app.bin
    - sleep 1
  artifacts:
    paths: [out/]
lint:
  stage: build
  script: [sleep 1]
unit:
  stage: test
  needs: [compile]
  script:
    - test "$(cat out/app.bin)" = binary
    - echo unit ok
slow-check:
  stage: test
  script: [sleep 0.5]
ship:
  stage: deploy
  script: [echo shipping]
"""


def finished_run(run_id: int, timeout: float = 60) -> Run:
    return wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=Run.FINISHED).first(),
        timeout=timeout,
        message=f"run {run_id} to finish",
    )


@pytest.fixture
def repo(tmp_path) -> tuple[GitRepo, Repository]:
    git = GitRepo(tmp_path / "src")
    git.commit({".slipway.yml": PIPELINE, "README.md": "hi"}, "first")
    repository = Repository.objects.create(name="app", clone_url=str(git.path))
    return git, repository


def test_three_stage_pipeline_runs_in_order_and_in_parallel(repo, workers) -> None:
    git, repository = repo
    run = services.trigger_run(repository, ref="main")
    run = finished_run(run.pk)
    jobs = {job.name: job for job in run.jobs.all()}
    assert run.status == "success", (
        run.error,
        {n: (j.status, j.reason) for n, j in jobs.items()},
    )
    assert run.commit_sha == git.head()
    assert {j.status for j in jobs.values()} == {"success"}
    # Stage order: unit needs compile only; ship waits for every test job.
    assert jobs["unit"].started_at >= jobs["compile"].finished_at
    assert jobs["ship"].started_at >= max(
        jobs["unit"].finished_at, jobs["slow-check"].finished_at
    )
    # Parallelism: the two build jobs overlapped on the two workers.
    assert jobs["compile"].started_at < jobs["lint"].finished_at
    assert jobs["lint"].started_at < jobs["compile"].finished_at
    # Artifacts flowed from compile to unit (its test would have failed otherwise).
    assert Artifact.objects.filter(job=jobs["compile"]).count() == 1
    unit_log = "\n".join(text for _, _, text in logs.read_lines(jobs["unit"]))
    assert "unit ok" in unit_log
    assert "restored" in unit_log


def test_invalid_spec_fails_the_run_with_line_numbers(tmp_path, workers) -> None:
    git = GitRepo(tmp_path / "bad")
    git.commit({".slipway.yml": "build:\n  stage: build\n  scirpt: [make]\n"})
    repository = Repository.objects.create(name="bad", clone_url=str(git.path))
    run = finished_run(services.trigger_run(repository, ref="main").pk)
    assert run.status == "failed"
    assert ".slipway.yml:3:3" in run.error
    assert "did you mean 'script'" in run.error
    assert not run.jobs.exists()


def test_secret_is_masked_in_the_stored_log(tmp_path, workers) -> None:
    git = GitRepo(tmp_path / "sec")
    git.commit(
        {
            ".slipway.yml": (
                "show:\n  script:\n"
                '    - echo "token is $API_TOKEN"\n'
                "    - printf '%s' \"$API_TOKEN\" | cut -c1-6; printf '%s\\n' \"$API_TOKEN\" | cut -c7-\n"
                '    - echo "db=${DATABASE_URL:-unset} redis=${REDIS_URL:-unset}"\n'
            )
        }
    )
    repository = Repository.objects.create(name="sec", clone_url=str(git.path))
    Variable.objects.create(
        repository=repository,
        name="API_TOKEN",
        value="s3cr3t-value-123",
        is_secret=True,
    )
    run = finished_run(services.trigger_run(repository, ref="main").pk)
    job = run.jobs.get()
    text = "\n".join(t for _, _, t in logs.read_lines(job))
    assert run.status == "success", text
    assert "s3cr3t-value-123" not in text
    assert "token is [MASKED]" in text
    # Jobs never see the platform's own settings.
    assert "db=unset redis=unset" in text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_kills_a_running_sleep_within_two_seconds(tmp_path, workers) -> None:
    git = GitRepo(tmp_path / "cancel")
    git.commit(
        {
            ".slipway.yml": "wait:\n  script:\n    - echo $$ > /tmp/slipway-cancel-$SLIPWAY_JOB_ID.pid\n    - sleep 300\n"
        }
    )
    repository = Repository.objects.create(name="cancel", clone_url=str(git.path))
    run = services.trigger_run(repository, ref="main")
    job = wait_for(lambda: Job.objects.filter(run=run, status="running").first(), 30)
    pid_file = f"/tmp/slipway-cancel-{job.pk}.pid"
    pid = int(
        wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(), 10)
    )
    assert _pid_alive(pid)
    started = time.monotonic()
    services.cancel_run(Run.objects.get(pk=run.pk))
    wait_for(lambda: not _pid_alive(pid), 2.5, 0.02, "the script process to die")
    assert time.monotonic() - started <= 2.5
    run = finished_run(run.pk, 10)
    assert run.status == "canceled"
    assert run.jobs.get().status == "canceled"
    os.unlink(pid_file)


def test_timeout_fails_the_job_and_retry_runs_it_again(tmp_path, workers) -> None:
    git = GitRepo(tmp_path / "timeout")
    git.commit({".slipway.yml": "slow:\n  timeout: 1s\n  script: [sleep 30]\n"})
    repository = Repository.objects.create(name="timeout", clone_url=str(git.path))
    run = finished_run(services.trigger_run(repository, ref="main").pk, 30)
    job = run.jobs.get()
    assert (run.status, job.status, job.failure_reason) == (
        "failed",
        "failed",
        "timeout",
    )
    clone = services.retry_job(job)
    assert clone.attempt == 2
    run = finished_run(run.pk, 30)
    assert run.jobs.filter(retried=False).get().attempt == 2
    assert Job.objects.get(pk=job.pk).retried is True


def test_killed_worker_leaves_the_job_failed_not_stuck(
    tmp_path, transactional_db, tmp_path_factory, settings
) -> None:
    from core.testing.processes import CeleryWorker

    git = GitRepo(tmp_path / "crash")
    git.commit({".slipway.yml": "long:\n  script: [sleep 120]\n"})
    repository = Repository.objects.create(name="crash", clone_url=str(git.path))
    log_dir = tmp_path_factory.mktemp("crash-workers")
    env = {"SLIPWAY_HEARTBEAT_SECONDS": "1", "SLIPWAY_HEARTBEAT_LAPSE_SECONDS": "4"}
    victim = CeleryWorker("victim", extra_env=env).start(log_dir)
    try:
        run = services.trigger_run(repository, ref="main")
        job = wait_for(
            lambda: Job.objects.filter(run=run, status="running").first(), 30
        )
        killed_at = time.monotonic()
        victim.kill()
    finally:
        victim.stop()
    settings.SLIPWAY = {**settings.SLIPWAY, "HEARTBEAT_LAPSE_SECONDS": 4}

    def reaped() -> bool:
        services.reap_lapsed_jobs()
        return Job.objects.get(pk=job.pk).status != "running"

    wait_for(reaped, 60, 0.5, "the reaper to notice the dead worker")
    assert time.monotonic() - killed_at < 60
    job = Job.objects.get(pk=job.pk)
    assert (job.status, job.failure_reason) == ("failed", "worker_lost")
    # Its orphaned script does not keep running either.
    out = subprocess.run(["pgrep", "-f", "sleep 120"], capture_output=True, text=True)
    for pid in out.stdout.split():
        os.kill(int(pid), signal.SIGKILL)


def test_beat_sends_the_reaper_by_name_and_stays_small(tmp_path, workers) -> None:
    """A real `celery -A config beat` drives the reaper on the real workers.

    Beat only sends schedule entries by task name (config/celery.py): it never sets
    Django up, so it stays at the size of Celery and the settings (~55 MiB instead
    of ~155 MiB with every app imported).
    """
    from datetime import timedelta

    from django.utils import timezone

    from core.testing.processes import BASE_DIR, subprocess_env

    from .factories import make_job, make_run

    run = make_run(status=Run.Status.RUNNING)
    lapsed = make_job(
        run=run,
        status=Job.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(minutes=10),
    )
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "INFO"),
                *("-s", str(tmp_path / "celerybeat-schedule")),
            ],
            cwd=BASE_DIR,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # The reaper runs every 5 s; the worker fails the job whose heartbeat lapsed.
        job = wait_for(
            lambda: Job.objects.filter(pk=lapsed.pk, status=Job.Status.FAILED).first(),
            timeout=40,
            message=f"beat's reaper to fail job {lapsed.pk}",
        )
        assert job.failure_reason == "worker_lost"
        assert "Sending due task reap-lapsed-jobs" in log_path.read_text()
        with open(f"/proc/{beat.pid}/status") as status:
            rss_kib = next(
                int(line.split()[1]) for line in status if line.startswith("VmRSS:")
            )
        assert rss_kib < 100 * 1024, f"beat uses {rss_kib // 1024} MiB"
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        try:
            beat.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(beat.pid, signal.SIGKILL)
            beat.wait(5)
