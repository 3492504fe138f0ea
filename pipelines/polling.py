"""Poll repositories that cannot send webhooks: new commits per branch start runs.

Celery beat calls :func:`poll_due` every 15 seconds (``pipelines.poll_repositories``).
A repository with ``poll_interval > 0`` is due when ``last_polled_at`` is older than
its interval. Each poll claims the repository with a conditional UPDATE of
``last_polled_at`` (only the poller whose UPDATE changed the row polls) and holds a
Redis lock while it fetches, so two beats, or a slow poll overlapping the next one,
never poll the same repository at once.

Where the last seen heads live, and why:

- The runs are the truth. A branch whose head is the commit of its latest run has
  nothing new, whoever started that run (a poll, a webhook, a person). This survives
  a Redis flush or restart without starting a run for every branch again.
- Redis holds the heads seen at the last poll, in the hash ``slipway:poll:<repo id>``
  (a cache, no model change). It is what tells a new branch from an old one that
  never ran, and a branch that moved from one whose run was filtered out. The
  field ``POLLED_MARK`` says the hash is complete.

So a branch starts a run when its head differs from both its cached head and its
latest run's commit. A branch missing from a complete cache is new and starts one
run. The first poll of a repository (no cache yet, never polled) only records the
heads, except that the default branch runs if it never ran. When the cache was lost
after earlier polls, branches with runs are compared with their latest run and
branches without runs are only recorded: a flushed cache never starts a storm of
runs on old branches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError

from . import logs, services
from .git import GitError
from .hooks import matches_filter
from .models import Repository, Run

logger = logging.getLogger(__name__)

POLLED_MARK = "\x00polled"
LOCK_SECONDS = 15 * 60


def cache_key(repository_id: int) -> str:
    return f"slipway:poll:{repository_id}"


def lock_key(repository_id: int) -> str:
    return f"slipway:poll-lock:{repository_id}"


@dataclass
class PollResult:
    """What one poll of one repository found and did."""

    repository_id: int
    heads: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    error: str = ""


def is_due(repository: Repository, now: datetime) -> bool:
    """Return whether REPOSITORY polls and its last poll is older than its interval."""
    if repository.poll_interval <= 0:
        return False
    last = repository.last_polled_at
    return last is None or last <= now - timedelta(seconds=repository.poll_interval)


def claim(repository: Repository, now: datetime) -> bool:
    """Set ``last_polled_at`` to NOW unless another poller did since we read it."""
    last = repository.last_polled_at
    rows = Repository.objects.filter(pk=repository.pk, poll_interval__gt=0)
    rows = (
        rows.filter(last_polled_at__isnull=True)
        if last is None
        else rows.filter(last_polled_at=last)
    )
    if not rows.update(last_polled_at=now):
        return False
    repository.last_polled_at = now
    return True


def _latest_run_shas(repository: Repository, branches: list[str]) -> dict[str, str]:
    """Return ``{branch: commit of its newest run}`` for BRANCHES that ran."""
    latest: dict[str, str] = {}
    rows = (
        Run.objects.filter(repository=repository, branch__in=branches)
        .exclude(commit_sha="")
        .order_by("branch", "-id")
        .values_list("branch", "commit_sha")
    )
    for branch, sha in rows:
        latest.setdefault(branch, sha)
    return latest


def _read_cache(client: Redis, repository_id: int) -> dict[str, str] | None:
    """Return the cached heads, or None when there is no complete cache."""
    raw = client.hgetall(cache_key(repository_id))
    cached = {k.decode(): v.decode() for k, v in raw.items()}
    if cached.pop(POLLED_MARK, None) is None:
        return None
    return cached


def _write_cache(client: Redis, repository_id: int, heads: dict[str, str]) -> None:
    key = cache_key(repository_id)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping={POLLED_MARK: "1", **heads})
    pipe.execute()


def changed_branches(
    repository: Repository,
    heads: dict[str, str],
    cached: dict[str, str] | None,
    *,
    first_poll: bool,
) -> list[tuple[str, str, str]]:
    """Return ``(branch, head, previous head or "")`` for every branch to run."""
    wanted = sorted(b for b in heads if matches_filter(b, repository.branch_filter))
    latest = _latest_run_shas(repository, wanted)
    to_run: list[tuple[str, str, str]] = []
    for branch in wanted:
        head = heads[branch]
        ran = latest.get(branch)
        if head == ran:
            continue  # Its newest run is on this commit already.
        if cached is not None and branch in cached:
            if cached[branch] != head:
                to_run.append((branch, head, cached[branch]))
        elif cached is not None:
            to_run.append((branch, head, ""))  # A new branch: one run.
        elif first_poll:
            if branch == repository.default_branch and ran is None:
                to_run.append((branch, head, ""))
        elif ran is not None:
            to_run.append((branch, head, ran))  # Cache lost: the runs decide.
    return to_run


def poll(
    repository: Repository,
    client: Redis | None = None,
    *,
    first_poll: bool | None = None,
) -> PollResult:
    """Fetch REPOSITORY's mirror and start a run for every branch whose head moved.

    The caller claims the repository first (see :func:`claim`). FIRST_POLL says
    whether it was never polled before; by default, whether ``last_polled_at`` is
    empty.
    """
    client = client or logs.redis_client()
    result = PollResult(repository.pk)
    if first_poll is None:
        first_poll = repository.last_polled_at is None
    lock = client.lock(lock_key(repository.pk), timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        result.error = "another poll of this repository is running"
        return result
    try:
        mirror = services.mirror_for(repository)
        try:
            mirror.fetch()
            heads = mirror.branches()
        except GitError as exc:
            result.error = str(exc)
            logger.warning("polling %s failed: %s", repository.name, exc)
            return result
        result.heads = heads
        cached = _read_cache(client, repository.pk)
        for branch, head, before in changed_branches(
            repository, heads, cached, first_poll=first_poll
        ):
            result.runs.append(
                services.trigger_run(
                    repository,
                    trigger=Run.Trigger.POLL,
                    ref=f"refs/heads/{branch}",
                    sha=head,
                    before=before,
                )
            )
        # After the runs: if this write fails, the runs' commits still stop the
        # next poll from starting them again.
        _write_cache(client, repository.pk, heads)
    finally:
        try:
            lock.release()
        except RedisError:
            pass  # Expired or lost: it frees itself.
    return result


def poll_due(now: datetime | None = None) -> list[PollResult]:
    """Poll every repository that is due at NOW; return what each poll did."""
    now = now or timezone.now()
    client = logs.redis_client()
    results: list[PollResult] = []
    # Few repositories poll; the interval differs per row, so filter here.
    candidates = Repository.objects.filter(poll_interval__gt=0).order_by("pk")
    for repository in candidates:
        if not is_due(repository, now):
            continue
        first_poll = repository.last_polled_at is None
        if not claim(repository, now):
            continue  # Another poller claimed it since we read it.
        try:
            results.append(poll(repository, client, first_poll=first_poll))
        except Exception:
            # One broken repository must not keep the others from polling.
            logger.exception("polling %s failed", repository.name)
    return results
