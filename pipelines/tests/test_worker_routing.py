"""Tags route jobs to queues: a worker started for some queues takes only those."""

from __future__ import annotations

import pytest
from django.test import Client

from core.testing.processes import CeleryWorker
from pipelines import services
from pipelines.models import Job, Repository, Run

from .gitrepo import GitRepo
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TAGGED = """
plain:
  script: [echo plain]
on-cpu:
  tags: [cpu]
  script: [echo cpu]
on-gpu:
  tags: [gpu]
  script: [echo gpu]
"""


def test_tagged_jobs_land_on_the_worker_serving_their_queue(
    tmp_path, tmp_path_factory, victor
) -> None:
    git = GitRepo(tmp_path / "route")
    git.commit({".slipway.yml": TAGGED})
    repository = Repository.objects.create(name="route", clone_url=str(git.path))
    logs = tmp_path_factory.mktemp("routing")
    # "default" is also served by the session's shared workers when they are up,
    # so the proof for the general worker is its own tag queue, "cpu".
    general = CeleryWorker("general", queues=("default", "cpu"), concurrency=1)
    gpu = CeleryWorker("gpu", queues=("gpu",), concurrency=1)
    try:
        for worker in (general, gpu):
            worker.launch(logs)
        for worker in (general, gpu):
            worker.wait_ready()
        run = services.trigger_run(repository, ref="main")
        wait_for(
            lambda: Run.objects.filter(pk=run.pk, status__in=Run.FINISHED).exists(),
            60,
            message="the run to finish",
        )
        jobs = {job.name: job for job in Job.objects.filter(run=run)}
        assert Run.objects.get(pk=run.pk).status == "success"
        assert [jobs[name].queue for name in ("plain", "on-cpu", "on-gpu")] == [
            "default",
            "cpu",
            "gpu",
        ]
        assert jobs["on-cpu"].worker.startswith("general@")
        assert jobs["on-gpu"].worker.startswith("gpu@")
        # The gpu worker serves only "gpu": the untagged job went elsewhere.
        assert jobs["plain"].worker and not jobs["plain"].worker.startswith("gpu@")

        client = Client()
        client.force_login(victor)
        page = client.get("/workers/").content.decode()
        for worker, queue in (
            ("general@", "default"),
            ("general@", "cpu"),
            ("gpu@", "gpu"),
        ):
            row = page[page.index(f'data-worker="{worker}') :]
            row = row[: row.index("</tr>")]
            assert f'<span class="pill">{queue}</span>' in row
            assert "shell" in row
    finally:
        general.stop()
        gpu.stop()


def test_a_job_for_a_queue_nobody_serves_says_so(tmp_path, workers) -> None:
    git = GitRepo(tmp_path / "orphan")
    git.commit({".slipway.yml": "lonely:\n  tags: [arm64]\n  script: [true]\n"})
    repository = Repository.objects.create(name="orphan", clone_url=str(git.path))
    run = services.trigger_run(repository, ref="main")
    job = wait_for(lambda: Job.objects.filter(run=run, status="pending").first(), 30)
    assert (
        job.reason == "waiting for a worker that serves queue 'arm64' (the job's tags)"
    )
    services.cancel_run(Run.objects.get(pk=run.pk))
