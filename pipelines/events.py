"""Publishing run, stage and job changes to Channels groups.

The only module that knows group names and calls group_send. Publishing is
best-effort: the database is the truth, and a page that missed a message shows the
right state on its next render.

Messages leave through one publisher thread per process, in the order they were
published: ``async_to_sync(group_send)`` from a sync caller built a new event loop
and a new Redis connection for every message (~5-8 ms each, a dozen per job), and
that time sat between a job's commit and the queueing of the next job.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from .models import Job, Run, Stage

logger = logging.getLogger(__name__)

ACTIVITY_GROUP = "activity"


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def _seconds(delta: Any) -> float | None:
    return round(delta.total_seconds(), 1) if delta is not None else None


def run_payload(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "status": run.status,
        "duration": _seconds(run.duration),
        "reason": run.status_reason,
    }


def job_payload(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "name": job.name,
        "stage_id": job.stage_id,
        "status": job.status,
        "duration": _seconds(job.duration),
        "reason": job.reason,
        "exit_code": job.exit_code,
        "attempt": job.attempt,
    }


def activity_payload(run: Run) -> dict[str, Any]:
    return {
        "kind": "run",
        "id": run.pk,
        "repository": run.repository.name,
        "number": run.number,
        "status": run.status,
        "branch": run.branch or run.tag,
        "title": run.commit_title,
        "url": run.get_absolute_url(),
        "at": (run.finished_at or run.started_at or run.created_at).isoformat(),
        "duration": _seconds(run.duration),
    }


# Messages waiting beyond this (Redis down for long) are dropped, not hoarded.
MAX_PENDING = 10_000
SEND_TIMEOUT = 5.0


class _Publisher:
    """Send group messages from one long-lived event loop thread, in order.

    ``submit`` never blocks on Redis: it hands the message to the loop and returns.
    The loop keeps its channel-layer connection open between messages. A forked
    child (Celery prefork) starts its own thread on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._pending = 0
        self._idle = threading.Condition()

    def submit(self, group: str, message: dict[str, Any]) -> None:
        loop, queue = self._started()
        with self._idle:
            if self._pending >= MAX_PENDING:
                logger.warning("dropping a message to %s: too many pending", group)
                return
            self._pending += 1
        loop.call_soon_threadsafe(queue.put_nowait, (group, message))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted message was sent (or failed); bounded."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _started(
        self,
    ) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[str, dict[str, Any]]]]:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    ready = threading.Event()
                    threading.Thread(
                        target=self._run, args=(ready,), daemon=True, name="events"
                    ).start()
                    ready.wait(10)
                    self._pid = os.getpid()
        assert self._loop is not None and self._queue is not None
        return self._loop, self._queue

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop, self._queue = loop, asyncio.Queue()
        ready.set()
        loop.run_until_complete(self._drain(self._queue))

    async def _drain(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while True:
            group, message = await queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    await asyncio.wait_for(
                        layer.group_send(
                            group, {"type": "forward", "message": message}
                        ),
                        SEND_TIMEOUT,
                    )
            except Exception as exc:  # Best-effort: a Redis hiccup must not fail a job.
                logger.warning("could not publish to %s: %s", group, exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.notify_all()


_publisher = _Publisher()
# A short-lived process (a management command) still delivers what it published.
atexit.register(_publisher.flush, 2.0)


def flush(timeout: float = 5.0) -> bool:
    """Wait until this process's published messages have left; return whether all did."""
    return _publisher.flush(timeout)


def _send(group: str, message: dict[str, Any]) -> None:
    _publisher.submit(group, message)


def _after_commit(func: Any) -> None:
    # Publish after commit: a socket must never show a state the database rolled back.
    transaction.on_commit(func)


def run_changed(run: Run) -> None:
    """Publish RUN's status to its page and to the activity feed."""
    message = {"type": "run.status", "run": run_payload(run)}
    activity = {"type": "activity", "event": activity_payload(run)}

    def send() -> None:
        _send(run_group(run.pk), message)
        _send(ACTIVITY_GROUP, activity)

    _after_commit(send)


def job_changed(job: Job) -> None:
    """Publish JOB's status to its run's page."""
    message = {"type": "job.status", "job": job_payload(job)}
    _after_commit(lambda: _send(run_group(job.run_id), message))


def stage_changed(stage: Stage) -> None:
    """Publish STAGE's status to its run's page."""
    message = {
        "type": "stage.status",
        "stage": {"id": stage.pk, "status": stage.status},
    }
    _after_commit(lambda: _send(run_group(stage.run_id), message))
