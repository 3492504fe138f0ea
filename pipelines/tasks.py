"""Celery tasks: thin doors into the services."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.db import InterfaceError, OperationalError

from . import services, workers
from .models import Job

logger = logging.getLogger(__name__)
_announcer: workers.Announcer | None = None


# A database outage is transient infrastructure: retry, unlike a failing build.
DB_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    name="pipelines.start_run",
    acks_late=True,
    autoretry_for=DB_ERRORS,
    retry_backoff=2,
    max_retries=8,
)
def start_run(run_id: int) -> None:
    services.start_run(run_id)


@shared_task(
    name="pipelines.advance_run",
    acks_late=True,
    autoretry_for=DB_ERRORS,
    retry_backoff=2,
    max_retries=8,
)
def advance_run(run_id: int) -> None:
    services.advance_started(run_id)
    services.advance_run(run_id)


@shared_task(name="pipelines.run_job", bind=True, acks_late=True)
def run_job(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    job = Job.objects.claim(
        job_id, worker=self.request.hostname or services.current_worker()
    )
    if job is None:
        return  # Claimed, finished or canceled already: a redelivery does nothing.
    services.execute_job(job)


@shared_task(name="pipelines.reap_lapsed_jobs")
def reap_lapsed_jobs() -> int:
    return services.reap_lapsed_jobs() + services.redispatch_stalled()


@shared_task(
    name="pipelines.report_commit_status",
    autoretry_for=(OSError,),
    retry_backoff=5,
    max_retries=5,
)
def report_commit_status(run_id: int) -> None:
    from . import forge_status

    forge_status.report(run_id)


@worker_ready.connect
def _announce(sender, **kwargs):  # type: ignore[no-untyped-def]
    """Register this worker and subscribe it to the executor queues it can serve."""
    global _announcer
    consumer = sender
    queues = sorted(q.name for q in consumer.task_consumer.queues)
    capabilities = workers.executor_capabilities()
    for name in workers.executor_queues(queues, capabilities):
        if name not in queues:
            consumer.add_task_queue(name)
    _announcer = workers.Announcer(
        consumer.hostname,
        queues,
        consumer.controller.concurrency,
        executors=capabilities,
        subscribe=_resubscriber(consumer.app, consumer.hostname),
    )
    _announcer.start()
    logger.info(
        "worker %s serves %s; executors %s",
        consumer.hostname,
        _announcer.queues,
        capabilities,
    )


def _resubscriber(app, hostname: str) -> workers.Subscribe:  # type: ignore[no-untyped-def]
    """Return how the announcer thread changes this worker's queues.

    Through a remote-control broadcast to this worker only: the consumer applies it
    in its own thread, since its broker connection is not safe to use from another.
    """

    def subscribe(added: list[str], removed: list[str]) -> None:
        for name in added:
            app.control.add_consumer(name, destination=[hostname], reply=False)
        for name in removed:
            app.control.cancel_consumer(name, destination=[hostname], reply=False)

    return subscribe


@worker_shutting_down.connect
def _stop_jobs(**kwargs):  # type: ignore[no-untyped-def]
    """Kill the jobs this worker runs as soon as it is asked to stop.

    Sent in the main process from the SIGTERM/SIGINT handler (threads and solo
    pools run jobs in that process). A warm shutdown would otherwise wait for every
    job to end, and the supervisor's final SIGKILL (honcho, Kubernetes) would leave
    the job scripts, each in its own session, running as orphans. The executors
    kill each job's process group (or container) and the jobs are recorded as
    failed with worker_lost, so `retry: {when: [worker_lost]}` starts them again
    on another worker.
    """
    from .engine.executors.shell import stop_all_jobs

    stop_all_jobs()


@worker_shutdown.connect
def _withdraw(**kwargs):  # type: ignore[no-untyped-def]
    if _announcer is not None:
        _announcer.stop()


from . import trigger_tasks  # noqa: E402, F401
