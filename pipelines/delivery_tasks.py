"""Celery tasks of continuous delivery: thin doors into `pipelines.delivery`."""

from __future__ import annotations

from celery import shared_task

from . import delivery


@shared_task(name="pipelines.apply_deployment", acks_late=True)
def apply_deployment(deployment_id: int) -> None:
    # Idempotent: a redelivered task finds the deployment finished and does nothing.
    delivery.apply_deployment(deployment_id)
