"""Publishing run, stage and job changes to Channels groups.

The only module that knows group names and calls group_send. Publishing is
best-effort: the database is the truth, and a page that missed a message shows the
right state on its next render.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
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


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "forward", "message": message})
    except Exception as exc:  # Best-effort: a Redis hiccup must not fail a job.
        logger.warning("could not publish to %s: %s", group, exc)


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
