"""Read-side queries of the dashboard.

Every function here issues a fixed number of SQL queries, whatever the size of the
tables, and each query walks an index: pages stay fast with 100,000 runs. None of
them writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import (
    Avg,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import TruncDate
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from .models import Job, Repository, Run

log = logging.getLogger(__name__)

PAGE_SIZE = 50
ACTIVE_RUN_STATUSES = (Run.Status.CREATED, Run.Status.PENDING, Run.Status.RUNNING)
TREND_DAYS = 14
ACTIVE_LIMIT = 20
TREND_CACHE_SECONDS = 60
TREND_PAST_CACHE_SECONDS = 3600


# ---------------------------------------------------------------- run lists


# What a run row (and the activity feed) shows. Loading only these keeps the wide
# columns (variables, error) out of list pages; a template that needs another field
# costs a query per row, which the query-count tests catch.
RUN_ROW_FIELDS = (
    "id",
    "repository_id",
    "number",
    "status",
    "trigger",
    "ref",
    "branch",
    "tag",
    "commit_sha",
    "commit_message",
    "commit_author",
    "triggered_by_id",
    "created_at",
    "started_at",
    "finished_at",
    "repository__name",
    "triggered_by__username",
)


def runs_queryset() -> QuerySet[Run]:
    """Return runs with what a run row shows, newest first."""
    return (
        Run.objects.select_related("repository", "triggered_by")
        .only(*RUN_ROW_FIELDS)
        .order_by("-id")
    )


@dataclass
class RunFilters:
    """The filters of a run list, parsed from the query string."""

    repository: str = ""
    branch: str = ""
    status: str = ""
    trigger: str = ""

    @classmethod
    def from_query(cls, query: Any) -> RunFilters:
        status = query.get("status", "")
        trigger = query.get("trigger", "")
        return cls(
            repository=query.get("repository", "").strip()[:100],
            branch=query.get("branch", "").strip()[:255],
            status=status if status in Run.Status.values else "",
            trigger=trigger if trigger in Run.Trigger.values else "",
        )

    def apply(self, runs: QuerySet[Run]) -> QuerySet[Run]:
        if self.repository:
            runs = runs.filter(repository__name=self.repository)
        if self.branch:
            runs = runs.filter(branch=self.branch)
        if self.status:
            runs = runs.filter(status=self.status)
        if self.trigger:
            runs = runs.filter(trigger=self.trigger)
        return runs

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    @property
    def active(self) -> bool:
        return any(self.__dict__.values())


@dataclass
class Page:
    """One keyset page of rows ordered by descending id.

    ``before``/``after`` are the cursors of the next (older) and previous (newer)
    pages, or None when there is none. No COUNT(*): on a big table it scans.
    """

    rows: list[Any]
    before: int | None = None
    after: int | None = None
    first: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _int_param(query: Any, name: str) -> int | None:
    raw = query.get(name, "")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def keyset_page(qs: QuerySet[Any], query: Any, size: int = PAGE_SIZE) -> Page:
    """Return the page of QS (ordered by -id) that the ``before``/``after`` cursors pick."""
    before = _int_param(query, "before")
    after = _int_param(query, "after")
    if after is not None and before is None:
        rows = list(qs.filter(id__gt=after).order_by("id")[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows=rows,
            before=rows[-1].id if rows else None,
            after=rows[0].id if rows and has_newer else None,
            first=not has_newer,
        )
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(qs[: size + 1])
    has_older = len(rows) > size
    rows = rows[:size]
    return Page(
        rows=rows,
        before=rows[-1].id if rows and has_older else None,
        after=rows[0].id if rows and before is not None else None,
        first=before is None,
    )


def active_runs(limit: int | None = None) -> list[Run]:
    """Return the newest unfinished runs."""
    limit = limit or ACTIVE_LIMIT
    return decorate(runs_queryset().filter(status__in=ACTIVE_RUN_STATUSES)[:limit])


def recent_runs(limit: int = 12) -> list[Run]:
    """Return the newest runs of every repository."""
    return decorate(runs_queryset()[:limit])


# ---------------------------------------------------------------- repositories


def repositories_with_last_run() -> list[Repository]:
    """Return every repository with ``last_run`` (or None) and ``branch_count``.

    Three queries: the repositories with the id of their newest run (an index
    lookup per repository), those runs, and the distinct branches per repository.
    """
    newest = Run.objects.filter(repository=OuterRef("pk")).order_by("-id")
    repositories = list(
        Repository.objects.annotate(last_run_id=Subquery(newest.values("id")[:1]))
    )
    ids = [r.last_run_id for r in repositories if r.last_run_id]
    runs = (
        {
            r.pk: r
            for r in decorate(
                Run.objects.select_related("triggered_by").filter(pk__in=ids)
            )
        }
        if ids
        else {}
    )
    branch_counts = dict(
        Run.objects.exclude(branch="")
        .filter(repository__in=[r.pk for r in repositories])
        .values("repository")
        .annotate(n=Count("branch", distinct=True))
        .values_list("repository", "n")
        if repositories
        else []
    )
    for repository in repositories:
        repository.last_run = runs.get(repository.last_run_id)
        repository.branch_count = branch_counts.get(repository.pk, 0)
    return repositories


def branches(repository: Repository, limit: int = 100) -> list[Run]:
    """Return the newest run of each branch of REPOSITORY, most recently active first."""
    latest = list(
        Run.objects.filter(repository=repository)
        .exclude(branch="")
        .values("branch")
        .annotate(last_id=Max("id"))
        .order_by("-last_id")
        .values_list("last_id", flat=True)[:limit]
    )
    if not latest:
        return []
    runs = Run.objects.select_related("triggered_by", "repository").in_bulk(latest)
    return decorate(runs[i] for i in latest if i in runs)


def last_run(repository: Repository, branch: str | None = None) -> Run | None:
    """Return the newest run of REPOSITORY (on BRANCH when given)."""
    runs = Run.objects.filter(repository=repository)
    if branch:
        runs = runs.filter(branch=branch)
    return runs.order_by("-id").first()


def last_finished_run(repository: Repository, branch: str | None = None) -> Run | None:
    """Return the newest finished or running run (what a badge shows)."""
    runs = Run.objects.filter(repository=repository).exclude(
        status__in=[Run.Status.CREATED, Run.Status.SKIPPED]
    )
    if branch:
        runs = runs.filter(branch=branch)
    return runs.order_by("-id").only("id", "status").first()


# ---------------------------------------------------------------- trends


@dataclass
class Trend:
    """Success rate and mean duration per day of one repository."""

    repository: str
    days: list[date]
    totals: list[int]
    successes: list[int]
    failures: list[int]
    durations: list[float | None]

    @property
    def total(self) -> int:
        return sum(self.totals)

    @property
    def success_rate(self) -> float | None:
        finished = sum(self.successes) + sum(self.failures)
        return None if finished == 0 else 100.0 * sum(self.successes) / finished

    @property
    def rates(self) -> list[float | None]:
        out: list[float | None] = []
        for ok, bad in zip(self.successes, self.failures, strict=True):
            out.append(None if ok + bad == 0 else 100.0 * ok / (ok + bad))
        return out

    @staticmethod
    def _carry(values: list[float | None]) -> list[float]:
        """Fill gaps with the last known value (a day without runs keeps the line)."""
        out: list[float] = []
        last: float | None = None
        for value in values:
            if value is not None:
                last = value
            if last is not None:
                out.append(round(last, 1))
        return out

    @property
    def rates_json(self) -> str:
        return json.dumps(self._carry(self.rates))

    @property
    def durations_json(self) -> str:
        return json.dumps(self._carry(self.durations))

    @property
    def runs_json(self) -> str:
        items = []
        for day, total, ok, bad in zip(
            self.days, self.totals, self.successes, self.failures, strict=True
        ):
            status = "failed" if bad > ok else ("success" if ok else "")
            items.append(
                {"label": day.strftime("%b %-d"), "value": total, "status": status}
            )
        return json.dumps(items)

    @property
    def bars(self) -> list[dict[str, Any]]:
        """Return one bar per day for a 140x32 SVG: x, y, width, height, status, title."""
        peak = max(self.totals) or 1
        slot = 140 / len(self.days)
        out = []
        for i, (day, total, ok, bad) in enumerate(
            zip(self.days, self.totals, self.successes, self.failures, strict=True)
        ):
            height = max(round(30 * total / peak, 1), 1.5 if total else 0)
            out.append(
                {
                    "x": round(i * slot + slot * 0.15, 1),
                    "y": round(32 - height, 1),
                    "width": round(slot * 0.7, 1),
                    "height": height,
                    "status": "failed" if bad > ok else "success",
                    "title": f"{day:%b %-d}: {total} run{'s' if total != 1 else ''}"
                    f" ({ok} passed, {bad} failed)",
                }
            )
        return out

    @property
    def mean_duration_text(self) -> str:
        return format_duration(self.mean_duration)

    @property
    def mean_duration(self) -> float | None:
        pairs = [
            (d, n)
            for d, n in zip(self.durations, self.totals, strict=True)
            if d is not None
        ]
        weight = sum(n for _, n in pairs)
        return None if not weight else sum(d * n for d, n in pairs) / weight


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    # SQLite returns microseconds for averaged durations.
    return float(value) / 1_000_000


TrendRow = tuple[int, date, int, int, int, "float | None"]


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


def _trend_rows(since: datetime, until: datetime | None = None) -> list[TrendRow]:
    """Return (repository id, day, runs, passed, failed, mean seconds) of a period.

    One aggregate query over the runs created in the period (``created_at`` is
    indexed). Grouped by repository id, not name: a narrower sort key.
    """
    runs = Run.objects.filter(created_at__gte=since)
    if until is not None:
        runs = runs.filter(created_at__lt=until)
    elapsed = ExpressionWrapper(
        F("finished_at") - F("started_at"), output_field=DurationField()
    )
    rows = (
        runs.annotate(day=TruncDate("created_at"))
        .values("repository_id", "day")
        .annotate(
            total=Count("id"),
            ok=Count("id", filter=Q(status=Run.Status.SUCCESS)),
            bad=Count("id", filter=Q(status=Run.Status.FAILED)),
            mean=Avg(
                elapsed,
                filter=Q(finished_at__isnull=False, started_at__isnull=False),
            ),
        )
        .order_by()
    )
    out: list[TrendRow] = []
    for row in rows:
        day = row["day"]
        if isinstance(day, str):
            day = date.fromisoformat(day)
        out.append(
            (
                row["repository_id"],
                day,
                row["total"],
                row["ok"],
                row["bad"],
                _seconds(row["mean"]),
            )
        )
    return out


def _repositories(ids: set[int]) -> dict[int, tuple[str, datetime]]:
    """Return the name and creation time of the repositories with IDS."""
    if not ids:
        return {}
    return {
        pk: (name, created)
        for pk, name, created in Repository.objects.filter(pk__in=ids).values_list(
            "pk", "name", "created_at"
        )
    }


def _window_rows(window: list[date]) -> tuple[list[TrendRow], dict[int, str]]:
    """Return the trend rows of the days in WINDOW (the last is today) and names.

    The days before today come from a cache of an hour, with the creation time of
    each repository they count: if one is gone or is another one now (a restored or
    replaced database), the whole window is counted again.
    """
    today = window[-1]
    zone = timezone.get_current_timezone_name()
    past_key = f"pipelines:trend-days:2:{zone}:{window[0]}:{today}"
    cached = _cache_get(past_key)
    if isinstance(cached, dict):  # Anything else was written by other code: ignore.
        current = _trend_rows(_day_start(today))
        repositories = _repositories(
            {row[0] for row in cached["rows"]} | {row[0] for row in current}
        )
        if all(
            repositories.get(pk, ("", None))[1] == created
            for pk, created in cached["repositories"].items()
        ):
            names = {pk: name for pk, (name, _) in repositories.items()}
            return cached["rows"] + current, names
    rows = _trend_rows(_day_start(window[0]))
    repositories = _repositories({row[0] for row in rows})
    past = [row for row in rows if row[1] < today]
    counted = {row[0] for row in past}
    _cache_set(
        past_key,
        {
            "rows": past,
            "repositories": {
                pk: created
                for pk, (_, created) in repositories.items()
                if pk in counted
            },
        },
        TREND_PAST_CACHE_SECONDS,
    )
    return rows, {pk: name for pk, (name, _) in repositories.items()}


def trends(days: int = TREND_DAYS, limit: int = 8) -> tuple[Trend, list[Trend]]:
    """Return the overall and per-repository daily trends of the last DAYS days.

    The result is cached for a minute. Underneath, the days before today are cached
    for an hour (TREND_PAST_CACHE_SECONDS) and only today's runs are counted again:
    with 100,000 runs the whole window costs a few hundred milliseconds, today's
    part about one. A run created on an earlier day that finishes later shows in that
    day's figures within the hour. The busiest LIMIT repositories come first.
    """
    key = f"pipelines:trends:{days}:{limit}"
    cached = _cache_get(key)
    if cached is not None:
        return cached
    today = timezone.localdate()
    window = [today - timedelta(days=days - 1 - i) for i in range(days)]
    rows, names = _window_rows(window)
    index = {d: i for i, d in enumerate(window)}
    by_repo: dict[str, Trend] = {}
    for repository_id, day, total, ok, bad, mean in rows:
        name = names.get(repository_id)
        if day not in index or name is None:
            continue
        trend = by_repo.get(name)
        if trend is None:
            trend = by_repo[name] = Trend(
                name,
                window,
                [0] * days,
                [0] * days,
                [0] * days,
                [None] * days,
            )
        i = index[day]
        trend.totals[i] = total
        trend.successes[i] = ok
        trend.failures[i] = bad
        trend.durations[i] = mean
    overall = Trend("all", window, [0] * days, [0] * days, [0] * days, [None] * days)
    weights = [0] * days
    sums = [0.0] * days
    for trend in by_repo.values():
        for i in range(days):
            overall.totals[i] += trend.totals[i]
            overall.successes[i] += trend.successes[i]
            overall.failures[i] += trend.failures[i]
            if trend.durations[i] is not None:
                weights[i] += trend.totals[i]
                sums[i] += trend.durations[i] * trend.totals[i]
    overall.durations = [
        s / w if w else None for s, w in zip(sums, weights, strict=True)
    ]
    ranked = sorted(by_repo.values(), key=lambda t: (-t.total, t.repository))
    result = (overall, ranked[:limit])
    _cache_set(key, result, TREND_CACHE_SECONDS)
    return result


# ---------------------------------------------------------------- infrastructure


def _cache_get(key: str) -> Any:
    """Return the cached value of KEY, or None (also when Redis is down)."""
    try:
        return cache.get(key)
    except Exception as exc:  # Any cache backend error: work without it.
        log.info("cache unavailable: %s", exc)
        return None


def _cache_set(key: str, value: Any, seconds: int) -> None:
    try:
        cache.set(key, value, seconds)
    except Exception as exc:  # Any cache backend error: work without it.
        log.info("cache unavailable: %s", exc)


@lru_cache(maxsize=4)
def _broker(url: str) -> Any:
    """Return a Redis client of URL with its own connection pool, one per process.

    A new client per request paid a TCP connect each time; the pool reconnects by
    itself after Redis restarts.
    """
    from redis import Redis

    return Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def queue_depth(queues: Sequence[str] = ("default",)) -> int | None:
    """Return how many tasks wait in the Celery queues, or None if Redis is down."""
    from redis.exceptions import RedisError

    url = getattr(settings, "CELERY_BROKER_URL", "") or settings.REDIS_URL
    try:
        client = _broker(url)
        return sum(int(client.llen(name)) for name in queues)
    except (RedisError, OSError, ValueError) as exc:
        log.info("queue depth unavailable: %s", exc)
        return None


def workers_online() -> list[str] | None:
    """Return the names of the workers that announced themselves recently.

    Read from the workers' own registry in Redis (no broadcast ping); None means
    Redis could not be asked.
    """
    from . import workers

    try:
        return [worker.name for worker in workers.online_workers()]
    except Exception as exc:  # Redis may be down.
        log.info("worker registry unavailable: %s", exc)
        return None


def worker_rows() -> list[dict[str, Any]]:
    """Return the online workers with their queues, executors and running jobs."""
    from . import workers

    online = workers.online_workers(fresh=True)
    running = dict(
        Job.objects.filter(
            status=Job.Status.RUNNING, worker__in=[w.name for w in online]
        )
        .values_list("worker")
        .annotate(n=Count("id"))
    )
    return [
        {
            "name": worker.name,
            "queues": [q for q in worker.queues if ":" not in q],
            "executors": sorted(worker.executors.items()),
            "concurrency": worker.concurrency,
            "running": running.get(worker.name, 0),
            "seen_at": datetime.fromtimestamp(worker.seen_at, tz=UTC),
        }
        for worker in online
    ]


@dataclass
class ClusterHealth:
    name: str
    reachable: bool
    version: str
    url: str
    last_seen_at: Any = None
    error: str = ""


def clusters_health(limit: int = 12) -> list[ClusterHealth] | None:
    """Return the clusters' health, or None when the clusters app has no model."""
    try:
        from clusters.models import Cluster
    except ImportError:
        return None
    try:
        # Only what the card shows: the credentials are encrypted and would each be
        # decrypted on load.
        rows = list(
            Cluster.objects.only(
                "id",
                "name",
                "reachable",
                "server_version",
                "last_seen_at",
                "last_error",
            ).order_by("name")[:limit]
        )
    except Exception as exc:  # A migration may not have run yet.
        log.info("clusters unavailable: %s", exc)
        return None
    out = []
    for row in rows:
        try:
            url = row.get_absolute_url()
        except Exception:  # No detail page yet.
            url = ""
        out.append(
            ClusterHealth(
                name=row.name,
                reachable=bool(getattr(row, "reachable", False)),
                version=getattr(row, "server_version", "") or "",
                url=url,
                last_seen_at=getattr(row, "last_seen_at", None),
                error=(getattr(row, "last_error", "") or "").splitlines()[0][:200]
                if getattr(row, "last_error", "")
                else "",
            )
        )
    return out


# ---------------------------------------------------------------- run page


def run_graph(run: Run, jobs: Iterable[Job], stages: Iterable[Any]) -> dict[str, Any]:
    """Return the data Slipway.PipelineGraph draws: stages, jobs, needs, status."""
    by_stage: dict[int, list[dict[str, Any]]] = {}
    job_url = id_url("pipelines:job-detail")
    for job in jobs:
        duration = job.duration
        by_stage.setdefault(job.stage_id, []).append(
            {
                "id": job.pk,
                "name": job.name,
                "status": job.status,
                "needs": job.needs if isinstance(job.needs, list) else None,
                "reason": job.reason,
                "duration": round(duration.total_seconds(), 1)
                if duration is not None
                else None,
                "allow_failure": job.allow_failure,
                "when": job.when,
                "url": job_url(job.pk),
                "attempt": job.attempt,
            }
        )
    return {
        "run": {"id": run.pk, "status": run.status},
        "stages": [
            {
                "id": stage.pk,
                "name": stage.name,
                "status": stage.status,
                "jobs": by_stage.get(stage.pk, []),
            }
            for stage in stages
        ],
    }


# ---------------------------------------------------------------- presentation


def format_duration(value: timedelta | float | None) -> str:
    """Return "3.2s", "1m 05s" or "2h 03m" (what static/js/time.js shows)."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    if seconds < 60:
        return f"{round(seconds)}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@lru_cache(maxsize=16)
def _url_parts(viewname: str, prefix: str) -> tuple[str, str]:
    """Return the text before and after the id in VIEWNAME's URL (one reverse())."""
    marker = 918273645
    before, after = reverse(viewname, args=[marker]).split(str(marker))
    return before, after


def id_url(viewname: str) -> Callable[[int], str]:
    """Return a function of an id giving VIEWNAME's URL, as reverse() would.

    reverse() costs about 20 µs; a table of 50 rows with two links each paid it 100
    times. The script prefix is part of the cache key, as it is of reverse()'s result.
    """
    before, after = _url_parts(viewname, get_script_prefix())
    return lambda pk: f"{before}{pk}{after}"


def decorate(rows: Iterable[Any]) -> list[Any]:
    """Give runs and jobs ``duration_text`` and ``duration_seconds`` for templates."""
    out = []
    for row in rows:
        duration = row.duration
        row.duration_seconds = (
            round(duration.total_seconds(), 1) if duration is not None else None
        )
        row.duration_text = format_duration(duration)
        out.append(row)
    return out
