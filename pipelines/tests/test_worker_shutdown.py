"""A worker asked to stop (SIGTERM, as honcho and Kubernetes send) leaves no job behind."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from core.testing.processes import CeleryWorker
from pipelines import logs, services
from pipelines.models import Job, Repository

from .gitrepo import GitRepo
from .waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def marked(marker: str) -> list[int]:
    """Return the live processes whose command line holds MARKER."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if marker.encode() in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("then_kill", [False, True], ids=["sigterm", "then-sigkill"])
def test_sigterm_to_a_worker_kills_its_running_job_and_records_it_lost(
    tmp_path, tmp_path_factory, workers, then_kill
) -> None:
    """SIGTERM ends the job at once; a SIGKILL soon after (the supervisor's, a second
    Ctrl-C) leaves no process either, and the reaper records the job then."""
    # Each sleep's argv[0] carries a marker unique to this test, so only the job's
    # own processes are looked for (and, should the test fail, killed).
    marker = f"slipway-orphan-{uuid.uuid4().hex[:12]}"
    git = GitRepo(tmp_path / "stop")
    git.commit(
        {
            ".slipway.yml": (
                "long:\n"
                "  tags: [shutdown-test]\n"
                "  script:\n"
                f'    - "(exec -a {marker}-bg sleep 300) &"\n'
                f'    - "(exec -a {marker} sleep 300)"\n'
            )
        }
    )
    repository = Repository.objects.create(name="stop", clone_url=str(git.path))
    worker = CeleryWorker("stopper", queues=("shutdown-test",), concurrency=1)
    try:
        worker.start(tmp_path_factory.mktemp("stopper"))
        run = services.trigger_run(repository, ref="main")
        job = wait_for(
            lambda: Job.objects.filter(run=run, status="running").first(),
            60,
            message="the job to start on the worker",
        )
        assert job.worker == worker.hostname
        wait_for(lambda: len(marked(marker)) == 2, 30, message="the job's sleeps")

        os.kill(worker.pid, signal.SIGTERM)  # The worker only, as honcho does.
        signaled = time.monotonic()
        if then_kill:
            time.sleep(0.3)
            worker.kill()
        wait_for(lambda: not marked(marker), 5, 0.05, "the job's processes to be gone")
        assert time.monotonic() - signaled < 5
        if then_kill:
            return
        # The worker does not wait for the job: it ends within seconds too.
        assert worker.proc is not None
        assert worker.proc.wait(20) == 0, worker.log_text()[-3000:]

        job = Job.objects.get(pk=job.pk)
        assert (job.status, job.failure_reason) == ("failed", "worker_lost")
        text = "\n".join(line for _, _, line in logs.read_lines(job))
        assert "the worker shut down while the job ran" in text
    finally:
        worker.stop()
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
