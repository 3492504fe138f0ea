"""Celery beat tasks for triggers: schedules, polling, and artifact expiry."""

from __future__ import annotations

from celery import shared_task

from . import artifacts, polling, schedules


@shared_task(name="pipelines.tick_schedules")
def tick_schedules() -> int:
    return len(schedules.tick())


@shared_task(name="pipelines.poll_repositories")
def poll_repositories() -> int:
    return sum(len(result.runs) for result in polling.poll_due())


@shared_task(name="pipelines.expire_artifacts")
def expire_artifacts() -> int:
    return artifacts.expire()
