"""Prometheus metrics at /metrics, computed from the database at scrape time.

Every value comes from a few aggregate queries (one per metric family, never one per
row) and one Redis pipeline, so any web replica answers the same numbers and nothing
is kept in process memory. Counters are derived from rows (runs, deliveries, log
lines): when old rows are pruned a counter goes down, which Prometheus treats as a
reset, like a process restart.

Access: the endpoint is off (404) until ``SLIPWAY_METRICS_TOKEN`` is set; then a scrape
must send ``Authorization: Bearer <token>`` (401 otherwise). See docs/deploy.md.

Watch health comes from what the monitor itself keeps in Redis, not from the
database: the active monitor renews its lock (``clusters.monitor``) every few seconds,
so the lock's remaining lifetime says how long ago it last wrote, and the lock lapses
when it dies; each cluster's snapshot state (``clusters.snapshot``) says whether its
watches are listed and up. ``Cluster.reachable`` in the database is only written on a
change, so it kept saying "up" after the monitor had died.

``core`` depends on neither app at import time: the models are imported when a scrape
runs, and the clusters app is optional (its absence yields no cluster samples).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import FieldError
from django.db import DatabaseError, models, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the run duration buckets: CI runs last seconds to hours.
RUN_DURATION_BUCKETS: tuple[float, ...] = (
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    21600,
)

# Upper bounds (seconds) of the job duration buckets: one script, seconds to an hour.
JOB_DURATION_BUCKETS: tuple[float, ...] = (
    1,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
)

# The active monitor's lock: clusters.monitor.LOCK_NAME and Settings().lock_ttl (a
# test keeps them equal). It is renewed every lock_ttl / 3 seconds and lapses
# lock_ttl seconds after the monitor stops renewing it.
MONITOR_LOCK = "slipway:monitor:lock"
MONITOR_LOCK_TTL = 15.0

# kombu's Redis transport keeps a queue in a list named after it, plus one list per
# priority step ("<queue>\x06\x16<priority>") when tasks are sent with a priority.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def _bucket_label(bound: float) -> str:
    return f"{float(bound)}"


class SlipwayCollector(Collector):
    """Collect Slipway's metrics from the database and Redis on every scrape."""

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not touch the database.
        return [
            GaugeMetricFamily("slipway_runs", ""),
            CounterMetricFamily("slipway_runs_created", ""),
            HistogramMetricFamily("slipway_run_duration_seconds", ""),
            GaugeMetricFamily("slipway_jobs", ""),
            HistogramMetricFamily("slipway_job_duration_seconds", ""),
            GaugeMetricFamily("slipway_jobs_active", ""),
            GaugeMetricFamily("slipway_queue_depth", ""),
            GaugeMetricFamily("slipway_redis_up", ""),
            CounterMetricFamily("slipway_webhook_deliveries", ""),
            CounterMetricFamily("slipway_log_lines_ingested", ""),
            GaugeMetricFamily("slipway_monitor_up", ""),
            GaugeMetricFamily("slipway_monitor_last_write_age_seconds", ""),
            GaugeMetricFamily("slipway_cluster_watch_up", ""),
            GaugeMetricFamily("slipway_cluster_watch_unsynced_kinds", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        from pipelines.models import Job, Run, WebhookDelivery

        yield from self._runs(Run)
        yield from self._jobs(Job)
        yield from self._queues(Job)
        yield from self._deliveries(WebhookDelivery)
        lines = Job.objects.aggregate(total=models.Sum("log_lines"))["total"] or 0
        counter = CounterMetricFamily(
            "slipway_log_lines_ingested",
            "Log lines stored for all jobs still in the database.",
        )
        counter.add_metric([], lines)
        yield counter
        yield from self._clusters()

    # Runs ------------------------------------------------------------------------

    def _runs(self, Run: type[models.Model]) -> Iterator[Metric]:
        by_status = _count_by(Run, "status")
        gauge = GaugeMetricFamily(
            "slipway_runs", "Runs in the database by status.", labels=["status"]
        )
        for status in Run.Status.values:  # type: ignore[attr-defined]
            gauge.add_metric([status], by_status.get(status, 0))
        yield gauge

        created = CounterMetricFamily(
            "slipway_runs_created", "Runs created (rows in the database)."
        )
        created.add_metric([], sum(by_status.values()))
        yield created

        yield self._run_durations(Run)

    def _run_durations(self, Run: type[models.Model]) -> Metric:
        return _duration_histogram(
            Run,
            "slipway_run_duration_seconds",
            "Duration of finished runs (started to finished), by final status.",
            RUN_DURATION_BUCKETS,
        )

    # Jobs and queues -------------------------------------------------------------

    def _jobs(self, Job: type[models.Model]) -> Iterator[Metric]:
        by_status = _count_by(Job, "status")
        gauge = GaugeMetricFamily(
            "slipway_jobs", "Jobs in the database by status.", labels=["status"]
        )
        for status in Job.Status.values:  # type: ignore[attr-defined]
            gauge.add_metric([status], by_status.get(status, 0))
        yield gauge
        yield _duration_histogram(
            Job,
            "slipway_job_duration_seconds",
            "Duration of finished jobs (started to finished), by final status.",
            JOB_DURATION_BUCKETS,
        )

        active = GaugeMetricFamily(
            "slipway_jobs_active",
            "Pending and running jobs by queue (what workers of each queue face).",
            labels=["queue", "status"],
        )
        rows = (
            Job.objects.filter(status__in=["pending", "running"])
            .values("queue", "status")
            .annotate(count=models.Count("id"))
            .order_by("queue", "status")
        )
        for row in rows:
            active.add_metric([row["queue"], row["status"]], row["count"])
        yield active

    def _queue_names(self, Job: type[models.Model]) -> list[str]:
        names = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "default")}
        for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
            names.add(getattr(queue, "name", None) or str(queue))
        names.update(
            Job.objects.filter(status__in=["created", "pending", "running"])
            .order_by()
            .values_list("queue", flat=True)
            .distinct()
        )
        return sorted(name for name in names if name)

    def _queues(self, Job: type[models.Model]) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "slipway_queue_depth",
            "Messages waiting in each Celery queue (Redis list length).",
            labels=["queue"],
        )
        up = GaugeMetricFamily(
            "slipway_redis_up", "1 when Redis answered this scrape, 0 otherwise."
        )
        names = self._queue_names(Job)
        try:
            client = Redis.from_url(
                settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2
            )
            try:
                pipe = client.pipeline(transaction=False)
                for name in names:
                    pipe.llen(name)
                    for step in _PRIORITY_STEPS:
                        pipe.llen(f"{name}{_PRIORITY_SEPARATOR}{step}")
                lengths = pipe.execute()
            finally:
                client.close()
        except (RedisError, OSError) as exc:
            logger.warning("metrics: Redis did not answer: %s", exc)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            per_queue = 1 + len(_PRIORITY_STEPS)
            for index, name in enumerate(names):
                chunk = lengths[index * per_queue : (index + 1) * per_queue]
                depth.add_metric([name], sum(int(n) for n in chunk))
        yield depth
        yield up

    # Webhooks and clusters -------------------------------------------------------

    def _deliveries(self, WebhookDelivery: type[models.Model]) -> Iterator[Metric]:
        by_outcome = _count_by(WebhookDelivery, "outcome")
        counter = CounterMetricFamily(
            "slipway_webhook_deliveries",
            "Webhook deliveries received, by outcome.",
            labels=["outcome"],
        )
        for outcome in WebhookDelivery.Outcome.values:  # type: ignore[attr-defined]
            counter.add_metric([outcome], by_outcome.get(outcome, 0))
        yield counter

    def _clusters(self) -> Iterator[Metric]:
        health = _watch_health()
        if health is None:
            return
        monitor_up = GaugeMetricFamily(
            "slipway_monitor_up",
            "1 while a cluster monitor holds the lock (is active), 0 otherwise.",
        )
        monitor_up.add_metric([], 1 if health.lock_age is not None else 0)
        yield monitor_up
        age = GaugeMetricFamily(
            "slipway_monitor_last_write_age_seconds",
            "Seconds since the active monitor last renewed its lock in Redis "
            f"(every {MONITOR_LOCK_TTL / 3:g} s; absent while no monitor is active).",
        )
        if health.lock_age is not None:
            age.add_metric([], health.lock_age)
        yield age
        up = GaugeMetricFamily(
            "slipway_cluster_watch_up",
            "1 while an active monitor watches the cluster, reaches it and every "
            "watch is listed and live; 0 otherwise.",
            labels=["cluster"],
        )
        unsynced = GaugeMetricFamily(
            "slipway_cluster_watch_unsynced_kinds",
            "Kinds the monitor has not listed yet for the cluster (refused kinds "
            "excluded); absent before the monitor wrote any state for it.",
            labels=["cluster"],
        )
        for name, state in health.clusters:
            live = (
                health.lock_age is not None
                and state.get("reachable") == "1"
                and state.get("stale") == "0"
            )
            up.add_metric([name], 1 if live else 0)
            if state:
                unsynced.add_metric([name], _unsynced_kinds(state))
        yield up
        yield unsynced


def _duration_histogram(
    model: type[models.Model], name: str, documentation: str, bounds: tuple[float, ...]
) -> Metric:
    """Return a cumulative histogram of finished rows' durations, by final status.

    One grouped query with a conditional count per bucket: the buckets only grow as
    rows finish, so ``histogram_quantile(0.95, rate(..._bucket[1h]))`` works.
    """
    duration = models.ExpressionWrapper(
        models.F("finished_at") - models.F("started_at"),
        output_field=models.DurationField(),
    )
    aggregates: dict[str, models.Aggregate] = {
        f"le_{index}": models.Count(
            "id", filter=models.Q(duration__lte=timedelta(seconds=bound))
        )
        for index, bound in enumerate(bounds)
    }
    rows = (
        model.objects.filter(
            status__in=model.FINISHED,  # type: ignore[attr-defined]
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .alias(duration=duration)
        .values("status")
        .annotate(count=models.Count("id"), total=models.Sum("duration"))
        .annotate(**aggregates)
        .order_by("status")
    )
    histogram = HistogramMetricFamily(name, documentation, labels=["status"])
    for row in rows:
        buckets = [
            (_bucket_label(bound), row[f"le_{index}"])
            for index, bound in enumerate(bounds)
        ]
        buckets.append(("+Inf", row["count"]))
        total = row["total"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else 0.0
        histogram.add_metric([row["status"]], buckets, max(seconds, 0.0))
    return histogram


def _count_by(model: type[models.Model], field: str) -> dict[str, int]:
    rows = model.objects.values(field).annotate(n=models.Count("id")).order_by(field)
    return {row[field]: row["n"] for row in rows}


class WatchHealth(NamedTuple):
    """What the monitor last wrote: its lock's age and each cluster's state hash."""

    # Seconds since the active monitor renewed its lock; None while none holds it
    # (or Redis did not answer: the monitor cannot write either).
    lock_age: float | None
    clusters: list[tuple[str, dict[str, str]]]


def _monitored_clusters() -> list[tuple[int, str]] | None:
    """Return (id, name) of the clusters the monitor watches; None without the app.

    The clusters app may not have its model, its fields or its table yet: each of
    those yields no samples instead of a failed scrape. The savepoint keeps a failed
    query from poisoning an enclosing PostgreSQL transaction.
    """
    try:
        from clusters.models import Cluster  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        with transaction.atomic():
            return [
                (int(pk), str(name))
                for pk, name in Cluster.objects.filter(monitored=True)
                .order_by("name")
                .values_list("pk", "name")
            ]
    except (FieldError, DatabaseError, AttributeError) as exc:
        logger.debug("metrics: no clusters: %s", exc)
        return None


def _watch_health() -> WatchHealth | None:
    """Read the monitor's lock and every monitored cluster's state in one pipeline."""
    clusters = _monitored_clusters()
    if clusters is None:
        return None
    from clusters import snapshot

    try:
        client = Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            pipe = client.pipeline(transaction=False)
            pipe.pttl(MONITOR_LOCK)
            for cid, _name in clusters:
                pipe.hgetall(snapshot.state_key(cid))
            ttl_ms, *states = pipe.execute()
        finally:
            client.close()
    except (RedisError, OSError) as exc:
        logger.warning("metrics: Redis did not answer for the monitor: %s", exc)
        return WatchHealth(None, [(name, {}) for _cid, name in clusters])
    # PTTL: -2 without the key, -1 for a key without expiry (never the monitor's).
    lock_age = (
        max(MONITOR_LOCK_TTL - int(ttl_ms) / 1000, 0.0) if int(ttl_ms) > 0 else None
    )
    decoded = [
        (name, {k.decode(): v.decode() for k, v in state.items()})
        for (_cid, name), state in zip(clusters, states, strict=True)
    ]
    return WatchHealth(lock_age, decoded)


def _unsynced_kinds(state: dict[str, str]) -> int:
    """Count the ``synced:<kind>`` fields still "0", leaving out refused kinds."""
    return sum(
        1
        for field, value in state.items()
        if field.startswith("synced:")
        and value != "1"
        and not state.get(f"forbidden:{field.split(':', 1)[1]}")
    )


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(SlipwayCollector())


def _token_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@login_not_required
@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the metrics in the Prometheus (or OpenMetrics) text format.

    404 while SLIPWAY_METRICS_TOKEN is empty (the endpoint is off); 401 without the
    right ``Authorization: Bearer`` token.
    """
    token = settings.SLIPWAY.get("METRICS_TOKEN", "")
    if not token:
        raise Http404("metrics are disabled: set SLIPWAY_METRICS_TOKEN")
    if not _token_matches(request, token):
        response = HttpResponse(
            "a bearer token is required\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="slipway-metrics"'
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(REGISTRY), content_type=content_type)
