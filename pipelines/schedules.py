"""Cron schedules: compute the next run time and start the runs that are due.

Celery beat calls :func:`tick` every 30 seconds (``pipelines.tick_schedules``). A
schedule runs at most once per due time, also when two ticks overlap (two beats by
mistake, a slow tick): each tick claims a schedule with a conditional UPDATE of
``next_run_at`` from the value it read to the next time, and only the tick whose
UPDATE changed the row starts the run, in the same transaction.

Cron expressions are read in ``settings.TIME_ZONE`` ("0 3 * * *" is 03:00 local
time); ``next_run_at`` is stored as an aware UTC datetime. After downtime a schedule
runs once for everything it missed, then continues from the current time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import services
from .models import Run, Schedule

logger = logging.getLogger(__name__)


def validate_cron(expression: str) -> str:
    """Return EXPRESSION normalised; raise ValueError unless it has five valid fields."""
    cron = " ".join(expression.split())
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ValueError(f"not a five-field cron expression: {expression[:100]!r}")
    return cron


def compute_next(schedule: Schedule, now: datetime | None = None) -> datetime:
    """Return the first time after NOW that SCHEDULE's cron matches, in UTC.

    The expression is evaluated in ``settings.TIME_ZONE``. Raise ValueError for an
    invalid expression.
    """
    cron = validate_cron(schedule.cron)
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("compute_next needs an aware datetime")
    local = now.astimezone(ZoneInfo(settings.TIME_ZONE))
    following = croniter(cron, local).get_next(datetime)
    return following.astimezone(UTC)


def refresh_next_run(schedule: Schedule, now: datetime | None = None) -> Schedule:
    """Set and save SCHEDULE's next run time (None when disabled); return it.

    Call after creating a schedule or changing its cron expression or enabled flag.
    """
    try:
        schedule.next_run_at = compute_next(schedule, now) if schedule.enabled else None
    except ValueError:
        logger.warning("schedule %s has an invalid cron %r", schedule.pk, schedule.cron)
        schedule.next_run_at = None
    if schedule.pk:
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=schedule.next_run_at)
    return schedule


def _variables(schedule: Schedule) -> dict[str, str]:
    raw = schedule.variables if isinstance(schedule.variables, dict) else {}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _claim_and_start(schedule: Schedule, now: datetime) -> Run | None:
    try:
        following: datetime | None = compute_next(schedule, now)
    except ValueError:
        following = None
        logger.warning(
            "schedule %s has an invalid cron %r: not run", schedule.pk, schedule.cron
        )
    with transaction.atomic():
        claimed = Schedule.objects.filter(
            pk=schedule.pk, enabled=True, next_run_at=schedule.next_run_at
        ).update(next_run_at=following)
        if not claimed or following is None:
            return None  # Another tick claimed this due time (or the cron is bad).
        run = services.trigger_run(
            schedule.repository,
            trigger=Run.Trigger.SCHEDULE,
            ref=schedule.branch,
            variables=_variables(schedule),
        )
        Schedule.objects.filter(pk=schedule.pk).update(last_run=run)
    return run


def tick(now: datetime | None = None) -> list[Run]:
    """Start a run for every enabled schedule due at NOW; return the runs started.

    Schedules without a next run time get one (and do not run yet).
    """
    now = now or timezone.now()
    for schedule in Schedule.objects.filter(enabled=True, next_run_at=None):
        try:
            following = compute_next(schedule, now)
        except ValueError:
            continue
        Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=None).update(
            next_run_at=following
        )
    started: list[Run] = []
    due = (
        Schedule.objects.filter(enabled=True, next_run_at__lte=now)
        .select_related("repository")
        .order_by("next_run_at", "pk")
    )
    for schedule in due:
        try:
            run = _claim_and_start(schedule, now)
        except Exception:
            # The claim rolled back with the run: the next tick tries again. One
            # broken schedule must not keep the others from running.
            logger.exception("schedule %s could not start a run", schedule.pk)
            continue
        if run is not None:
            started.append(run)
    return started
