"""Celery task for webhook deliveries: start the runs the web process queued.

Imported from ``PipelinesConfig.ready`` (autodiscovery only imports ``tasks``).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import hooks


@shared_task(name="pipelines.create_webhook_runs", acks_late=True)
def create_webhook_runs(deliveries: list[list[Any]]) -> int:
    """Start one run per [delivery id, trigger_run arguments]; return how many.

    One message carries the deliveries the web process recorded together. Each
    delivery is claimed on its own (``hooks.create_run``), so a redelivered message
    starts nothing twice and one failing delivery does not hold up the others.
    """
    return sum(
        1 for pk, arguments in deliveries if hooks.create_run(pk, arguments) is not None
    )


def run_queued(timeout: float = 5.0, limit: int = 100_000) -> int:
    """Run, in this process, the create_webhook_runs messages waiting on the broker.

    For tests and the benchmark, which run no worker: each message is taken from
    the real queue, so what the web process queued is exactly what runs. Other
    messages (start_run, ...) are dropped. Returns the number of runs started;
    stops when the queue stays empty for a short moment, after LIMIT messages, or
    after TIMEOUT seconds.
    """
    import time

    from kombu import Queue

    from config.celery import app

    deadline = time.monotonic() + timeout
    started = 0
    queue_name = app.conf.task_default_queue
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(Queue(queue_name, routing_key=queue_name))
        try:
            for _ in range(limit):
                if time.monotonic() > deadline:
                    break
                try:
                    message = queue.get(block=True, timeout=0.2)
                except queue.Empty:
                    break
                message.ack()
                if message.headers.get("task") != create_webhook_runs.name:
                    continue
                args, kwargs, _ = message.decode()
                started += create_webhook_runs(*args, **kwargs)
        finally:
            queue.close()
    return started
