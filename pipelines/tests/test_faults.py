"""Fault tests: break Slipway on purpose and check what it promises still holds.

Each test states its promise in its docstring. They use real processes: the session's
Celery workers, the session's Redis (restarted here), a live ASGI server, and one
dedicated worker with a small log limit. The slower faults (PostgreSQL restart under
load, killing the cluster monitor, 1,000 webhook deliveries) live in bench/faults.py.
A `kill -9` of a worker mid-job is test_engine_integration's
test_killed_worker_leaves_the_job_failed_not_stuck.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core.testing import servers
from core.testing.processes import CeleryWorker
from pipelines import logs, services
from pipelines.models import Job, Repository, Run, WebhookDelivery
from pipelines.webhooks.testing import signed_request

from .gitrepo import GitRepo
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LINES = 80
COUNTING = f"""
count:
  script:
    - 'for i in $(seq 1 {LINES}); do echo "line $i"; sleep 0.05; done'
"""


def _script_lines(job: Job) -> list[str]:
    return [t for _, _, t in logs.read_lines(job, limit=10**6) if t.startswith("line ")]


def test_redis_restart_mid_job_the_run_finishes_and_the_log_is_complete(
    tmp_path, workers
) -> None:
    """Promise: Redis restarting while a job runs loses nothing that matters.

    The running job finishes, the run gets its final status (the workers reconnect to
    the broker on their own), and the stored log holds every line the job printed
    exactly once, in order: lines are persisted to the database, not only to the
    Redis stream that the restart wipes.
    """
    git = GitRepo(tmp_path / "count")
    git.commit({".slipway.yml": COUNTING})
    repository = Repository.objects.create(name="count", clone_url=str(git.path))
    run = services.trigger_run(repository, ref="main")
    job = wait_for(
        lambda: Job.objects.filter(run=run, status="running").first(), 60, 0.05
    )
    # Restart once the job has printed some lines and has more to print.
    wait_for(lambda: len(_script_lines(job)) >= 10, 30, 0.05, "the first lines")
    servers.test_redis().restart()
    run = wait_for(
        lambda: Run.objects.filter(pk=run.pk, status__in=Run.FINISHED).first(),
        90,
        0.2,
        "the run to finish after the Redis restart",
    )
    job.refresh_from_db()
    assert (run.status, job.status, job.exit_code) == ("success", "success", 0)
    assert _script_lines(job) == [f"line {i}" for i in range(1, LINES + 1)]
    numbers = [n for n, _, _ in logs.read_lines(job, limit=10**6)]
    assert numbers == list(range(1, job.log_lines + 1))


QUEUED = """
stages: [one]
""" + "".join(f"j{index}:\n  stage: one\n  script: [sleep 2]\n" for index in range(8))


def test_redis_restart_with_jobs_queued_the_run_still_finishes(
    tmp_path, workers
) -> None:
    """Promise: a run finishes even if Redis restarts while some of its jobs wait
    in the queue (more jobs than worker slots): the reaper re-sends lost messages."""
    git = GitRepo(tmp_path / "queued")
    git.commit({".slipway.yml": QUEUED})
    repository = Repository.objects.create(name="queued", clone_url=str(git.path))
    run = services.trigger_run(repository, ref="main")
    wait_for(
        lambda: Job.objects.filter(run=run, status="running").count() >= 2,
        60,
        0.05,
        "jobs to run",
    )
    assert Job.objects.filter(run=run, status="pending").exists()
    servers.test_redis().restart()
    # 8 jobs of 2 s on 4 slots take about 4 s; give it a minute.
    assert _finishes_within(run.pk, 60), "run stalled: " + str(
        Counter(Job.objects.filter(run=run).values_list("status", flat=True))
    )


def _finishes_within(run_id: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # The reaper is beat's job; these tests run no beat, so call it as beat would.
        services.reap_lapsed_jobs()
        services.redispatch_stalled(grace=5)
        if Run.objects.filter(pk=run_id, status__in=Run.FINISHED).exists():
            return True
        time.sleep(0.5)
    return False


def test_duplicate_webhook_deliveries_start_exactly_one_run_each(
    tmp_path, asgi_server, workers, settings
) -> None:
    """Promise: 200 deliveries, every one sent twice at about the same moment
    (100 unique delivery ids), start exactly one run per unique delivery on the
    workers; the duplicates are answered 200 "duplicate", never 5xx, and recorded."""
    settings.SLIPWAY = {**settings.SLIPWAY, "RATELIMIT_HOOKS": "0"}
    git = GitRepo(tmp_path / "hooks")
    sha = git.commit({"README.md": "no pipeline: the runs end at once"})
    repository = Repository.objects.create(name="hooks", clone_url=str(git.path))
    ids = [str(uuid.uuid4()) for _ in range(100)]
    requests = []
    for delivery in ids:
        headers, body = signed_request(
            "github",
            repository.webhook_secret,
            after=sha,
            repo_url=str(git.path),
            commits=[sha],
            delivery_id=delivery,
        )
        requests += [(headers, body), (headers, body)]  # the duplicate, right after
    url = f"{asgi_server.url}/hooks/github/{repository.name}/"

    def post(request: tuple[dict[str, str], bytes]) -> int:
        headers, body = request
        with httpx.Client(timeout=30) as client:
            return client.post(url, content=body, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = Counter(pool.map(post, requests))
    assert codes == {201: 100, 200: 100}, codes
    created = WebhookDelivery.objects.filter(
        repository=repository, outcome=WebhookDelivery.Outcome.CREATED
    )
    # The workers start the queued runs; wait until every created delivery has one.
    wait_for(
        lambda: not created.filter(run=None).exists(),
        120,
        0.2,
        "the workers to start every queued run",
    )
    assert Run.objects.filter(repository=repository).count() == 100
    assert sorted(created.values_list("delivery_id", flat=True)) == sorted(ids)
    assert created.exclude(run=None).values("run").distinct().count() == 100
    assert (
        WebhookDelivery.objects.filter(
            repository=repository, outcome=WebhookDelivery.Outcome.DUPLICATE
        ).count()
        == 100
    )


LIMITED = """
big-ok:
  tags: [loglimit]
  script:
    - seq 1 20000
big-fail:
  tags: [loglimit]
  script:
    - seq 1 20000
    - exit 3
"""


def test_log_limit_truncates_with_a_marker_and_keeps_the_exit_status(
    tmp_path, transactional_db, tmp_path_factory
) -> None:
    """Promise: a job whose output exceeds SLIPWAY_LOG_MAX_BYTES is stored up to the
    limit plus one clear marker line; truncation never changes the job's status: a
    job that exits 0 still succeeds, one that exits 3 still fails with exit code 3."""
    git = GitRepo(tmp_path / "big")
    git.commit({".slipway.yml": LIMITED})
    repository = Repository.objects.create(name="big", clone_url=str(git.path))
    worker = CeleryWorker(
        "limited",
        queues=("loglimit",),
        concurrency=2,
        extra_env={"SLIPWAY_LOG_MAX_BYTES": "20000"},
    ).start(tmp_path_factory.mktemp("limited-worker"))
    try:
        run = services.trigger_run(repository, ref="main")
        run = wait_for(
            lambda: Run.objects.filter(pk=run.pk, status__in=Run.FINISHED).first(),
            90,
            0.1,
            "the run to finish",
        )
    finally:
        worker.stop()
    jobs = {job.name: job for job in run.jobs.all()}
    ok, bad = jobs["big-ok"], jobs["big-fail"]
    assert (ok.status, ok.exit_code) == ("success", 0)
    assert (bad.status, bad.exit_code, bad.failure_reason) == (
        "failed",
        3,
        "script_failure",
    )
    for job in (ok, bad):
        lines = logs.read_lines(job, limit=10**6)
        texts = [t for _, _, t in lines]
        assert job.log_truncated is True
        assert job.log_bytes > 100_000  # what the job printed, seen and counted
        markers = [t for t in texts if "log truncated after 20000 bytes" in t]
        assert len(markers) == 1, texts[-5:]
        assert sum(len(t) + 1 for t in texts) < 20000 + 2000
        assert "20000" not in texts  # the tail of the output is not stored
        assert [n for n, _, _ in lines] == list(range(1, len(lines) + 1))
