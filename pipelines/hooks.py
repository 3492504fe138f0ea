"""Receive a forge webhook: verify, deduplicate, record, and queue at most one run.

A delivery costs the web process a signature check, one Redis call and its share of
one INSERT; everything slower (the mirror fetch, the run, its audit entry and events)
happens on a worker, so the forge gets its answer well within its delivery timeout
and one web process answers hundreds of deliveries a second.

The steps, shared by the Django view (``receive``) and the ASGI route in front of
Django (``hook_views.HookApp``, which batches the writes of concurrent requests):

1. ``RepositoryCache.get``: the repository's id, secret and filters, kept in the
   process and checked against a version key in Redis that every repository save
   bumps, so a rotated secret takes effect on the next delivery.
2. ``examine``: verify the signature, parse the event and decide the outcome; no
   writes.
3. ``GATE_SCRIPT``: one Redis call that checks the cache version and claims the
   delivery id (``SET NX``); a claimed id answers "duplicate" at once.
4. ``record``: insert the deliveries (one statement for a batch) and queue one
   ``pipelines.create_webhook_runs`` message for those that start a run. The
   partial unique index on (repository, delivery_id) stays the final guard: when
   Redis forgot an id, the database still refuses its second "created" row.
5. ``create_run`` (on a worker): lock the delivery, start its run through
   ``services.trigger_run`` and fill in "run #N created".
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models.functions import Now
from django.db.models.signals import post_delete, post_save

from core import audit

from . import services
from .models import NAME_VALIDATOR, Repository, Run, WebhookDelivery
from .webhooks import PushEvent, WebhookError, get_forge
from .webhooks.base import Headers

logger = logging.getLogger(__name__)

MAX_STORED_BODY = 256 * 1024
# Run.ref and Run.branch/tag column sizes.
MAX_REF = 300
MAX_NAME = 255

# The reason a created delivery carries until a worker has started its run.
QUEUED = "run queued"
# How long Redis remembers a delivery id; the database remembers it for good.
SEEN_TTL = 7 * 24 * 3600
# The cache of repositories is also dropped after this many seconds, in case a
# change bypassed the save signal (a queryset update) or Redis lost the version.
CACHE_TTL = 60.0
VERSION_KEY = "slipway:hooks:repositories"

# KEYS[1] the repository version key, KEYS[2] (optional) the delivery id's key;
# ARGV[1] the version the caller's cache holds, ARGV[2] the id's TTL.
# Returns -1 (the cache is stale: reload and ask again), 1 (the id is new, or no
# id to claim) or 0 (the id was claimed before: a duplicate).
GATE_SCRIPT = """
local version = redis.call('GET', KEYS[1]) or ''
if version ~= ARGV[1] then return -1 end
if #KEYS < 2 then return 1 end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then return 1 end
return 0
"""
STALE, NEW, SEEN = -1, 1, 0


@dataclass(frozen=True)
class HookResult:
    """What to answer the forge."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class RepositoryInfo:
    """What a delivery needs of its repository, cached in the web process."""

    pk: int
    name: str
    webhook_secret: str
    branch_filter: str
    tag_filter: str


@dataclass
class Pending:
    """A delivery examined but not yet recorded."""

    delivery: WebhookDelivery
    # services.trigger_run's arguments when the delivery starts a run.
    trigger: dict[str, Any] | None = None
    # The Redis key claimed for its delivery id (released if recording fails).
    seen_key: str | None = None
    started: float = field(default_factory=time.perf_counter)


def matches_filter(name: str, patterns: str) -> bool:
    """Return whether NAME matches one of the comma-separated globs (none: all do)."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    return not globs or any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def _text(value: str, limit: int | None = None) -> str:
    # PostgreSQL refuses NUL in text and JSON columns: a request must not turn
    # into a 500 because a header or payload field carried one.
    value = value.replace("\x00", "\ufffd")
    return value if limit is None else value[:limit]


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {_text(str(k), 200): _text(str(v), 8192) for k, v in headers.items()}


def _ignore_reason(repository: RepositoryInfo | Repository, event: PushEvent) -> str:
    if event.event == "ping":
        return "ping: the forge checked the hook"
    if event.ignored:
        return f"event {event.forge_event or 'unknown'} not handled"
    if event.deleted:
        return f"{event.ref} was deleted"
    if len(event.ref) > MAX_REF or len(event.branch or event.tag or "") > MAX_NAME:
        return f"ref {event.ref[:80]}... is longer than Slipway stores"
    if (
        event.event == "tag"
        and event.tag
        and not matches_filter(event.tag, repository.tag_filter)
    ):
        return (
            f"tag {event.tag} does not match the tag filter {repository.tag_filter!r}"
        )
    if event.branch and not matches_filter(event.branch, repository.branch_filter):
        return f"branch {event.branch} does not match the branch filter {repository.branch_filter!r}"
    return ""


# --- the repository cache ------------------------------------------------------------


def redis_client() -> Any:
    """Return this process's synchronous Redis client (thread-safe, pooled)."""
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return _redis


_redis: Any = None


class RepositoryCache:
    """Repositories by name, valid while Redis holds the version they were read at.

    The version is read before the row, and a save bumps it after its commit: a row
    read before a change commits is always stored under a version the change
    replaces. Unknown names are cached too, so a flood of 404s costs no queries.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[RepositoryInfo | None, str, float]] = {}
        self._lock = threading.Lock()

    def cached(self, name: str) -> tuple[RepositoryInfo | None, str] | None:
        """Return (repository or None, version) if NAME is cached and young enough."""
        entry = self._entries.get(name)
        if entry is None or time.monotonic() - entry[2] > CACHE_TTL:
            return None
        return entry[0], entry[1]

    def load(self, name: str) -> tuple[RepositoryInfo | None, str]:
        """Read NAME from the database (blocking) and cache it."""
        try:
            raw = redis_client().get(VERSION_KEY)
            version = raw.decode() if raw else ""
        except Exception:  # noqa: BLE001 - without Redis, serve from the database.
            version = "unavailable"
        row = (
            Repository.objects.filter(name=name)
            .values_list("pk", "name", "webhook_secret", "branch_filter", "tag_filter")
            .first()
        )
        info = None
        if row is not None:
            info = RepositoryInfo(*row)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[name] = (info, version, time.monotonic())
        return info, version

    def get(self, name: str) -> tuple[RepositoryInfo | None, str]:
        """Return (repository or None, version), from the cache or the database."""
        return self.cached(name) or self.load(name)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


repositories = RepositoryCache()


def _repository_changed(**kwargs: Any) -> None:
    repositories.clear()

    def bump() -> None:
        try:
            redis_client().incr(VERSION_KEY)
        except Exception:  # noqa: BLE001 - the cache TTL bounds how long it is stale.
            logger.warning("webhook repository cache version not bumped: no Redis")

    transaction.on_commit(bump)


post_save.connect(_repository_changed, sender=Repository, dispatch_uid="hooks-cache")
post_delete.connect(_repository_changed, sender=Repository, dispatch_uid="hooks-cache")


# --- examine, gate, record -----------------------------------------------------------


def seen_key(repository_id: int, delivery_id: str) -> str:
    """Return the Redis key that marks DELIVERY_ID as seen for a repository."""
    return f"slipway:hooks:seen:{repository_id}:{delivery_id}"


def examine(
    forge_name: str,
    repository: RepositoryInfo,
    headers: Mapping[str, str],
    body: bytes,
    *,
    started: float,
) -> Pending:
    """Verify and parse a delivery and decide its outcome; write nothing.

    The outcome is final except for a created delivery, which the gate may still
    turn into a duplicate.
    """
    forge = get_forge(forge_name)
    # Index the headers once: the forge module looks several of them up.
    headers = Headers(headers)
    delivery = WebhookDelivery(
        repository_id=repository.pk,
        # The normalised name: the URL may say " GitHub" or "FORGEJO".
        forge=forge_name.strip().lower(),
        headers=_headers(forge.redact_headers(headers)),
        body=_text(body[:MAX_STORED_BODY].decode("utf-8", "replace")),
    )
    pending = Pending(delivery, started=started)
    limit = settings.SLIPWAY["WEBHOOK_MAX_BYTES"]
    if len(body) > limit:
        # The view checks Content-Length; this also covers chunked bodies and
        # callers other than the view.
        return _outcome(
            pending,
            WebhookDelivery.Outcome.REJECTED,
            413,
            f"body larger than {limit} bytes",
        )
    try:
        forge.verify(headers, body, repository.webhook_secret)
        delivery.delivery_id = forge.delivery_id(headers, body)
        event = forge.parse(headers, body)
    except WebhookError as exc:
        return _outcome(
            pending, WebhookDelivery.Outcome.REJECTED, exc.status, exc.message
        )
    delivery.event = event.event
    reason = _ignore_reason(repository, event)
    if reason:
        return _outcome(pending, WebhookDelivery.Outcome.IGNORED, 200, reason)
    pending.trigger = _trigger_arguments(event)
    if delivery.delivery_id:
        pending.seen_key = seen_key(repository.pk, delivery.delivery_id)
    return _outcome(pending, WebhookDelivery.Outcome.CREATED, 201, QUEUED)


def _outcome(pending: Pending, outcome: str, status: int, reason: str) -> Pending:
    delivery = pending.delivery
    delivery.outcome, delivery.status_code, delivery.reason = (
        outcome,
        status,
        _text(reason, 500),
    )
    return pending


def as_duplicate(pending: Pending) -> Pending:
    """Turn an examined delivery into the record of a delivery seen before."""
    pending.trigger = None
    pending.seen_key = None
    return _outcome(
        pending, WebhookDelivery.Outcome.DUPLICATE, 200, "delivery seen before"
    )


def gate_keys(pending: Pending | None) -> list[str]:
    """Return the KEYS of GATE_SCRIPT for PENDING (None: only check the version)."""
    keys = [VERSION_KEY]
    if pending is not None and pending.seen_key:
        keys.append(pending.seen_key)
    return keys


def gate(pending: Pending | None, version: str) -> int | None:
    """Run GATE_SCRIPT synchronously; None when Redis cannot be reached."""
    keys = gate_keys(pending)
    try:
        return int(
            redis_client().eval(GATE_SCRIPT, len(keys), *keys, version, SEEN_TTL)
        )
    except Exception:  # noqa: BLE001 - the database's unique index still decides.
        logger.warning("webhook gate skipped: Redis unavailable", exc_info=True)
        return None


def release(pendings: list[Pending]) -> None:
    """Forget the delivery ids PENDINGS claimed: they were not recorded."""
    keys = [p.seen_key for p in pendings if p.seen_key]
    if keys:
        try:
            redis_client().delete(*keys)
        except Exception:  # noqa: BLE001 - best effort; the database decides anyway.
            logger.warning("could not release %d webhook delivery ids", len(keys))


def record(pendings: list[Pending]) -> list[HookResult]:
    """Insert PENDINGS' deliveries and queue the runs; return each one's answer.

    One INSERT for the batch; when one row breaks the unique index (a delivery id
    Redis forgot), each row is inserted on its own and the loser becomes a
    duplicate. The runs are queued in one message after the commit; when the queue
    cannot take it, those deliveries are recorded as rejected with 503.
    """
    now = time.perf_counter()
    for pending in pendings:
        pending.delivery.duration_ms = round((now - pending.started) * 1000, 2)
        # The database stamps the batch. Also, a row holding an expression keeps
        # Django from PostgreSQL's UNNEST form of a bulk INSERT, whose client-side
        # quoting of the body as an array element costs ~2 ms per delivery; the
        # multi-row VALUES form quotes it in C.
        pending.delivery.received_at = Now()
    rows = [p.delivery for p in pendings]
    try:
        with transaction.atomic():
            WebhookDelivery.objects.bulk_create(rows)
    except IntegrityError:
        for pending in pendings:
            pending.delivery.pk = None
            try:
                with transaction.atomic():
                    pending.delivery.save(force_insert=True)
            except IntegrityError:
                # A concurrent redelivery won the unique (repository, delivery_id) row.
                as_duplicate(pending)
                pending.delivery.pk = None
                pending.delivery.save(force_insert=True)
    starting = [p for p in pendings if p.trigger is not None]
    if starting:
        transaction.on_commit(lambda: _queue_runs(starting))
    return [_answer(p) for p in pendings]


def _queue_runs(pendings: list[Pending]) -> None:
    from .hook_tasks import create_webhook_runs

    try:
        create_webhook_runs.apply_async(
            ([[p.delivery.pk, p.trigger] for p in pendings],)
        )
    except Exception as exc:  # noqa: BLE001 - answered and recorded as 503.
        logger.warning("webhook runs not queued: %s", exc)
        reason = _text(f"the run queue is unavailable: {exc}", 500)
        WebhookDelivery.objects.filter(pk__in=[p.delivery.pk for p in pendings]).update(
            outcome=WebhookDelivery.Outcome.REJECTED, status_code=503, reason=reason
        )
        for pending in pendings:
            pending.trigger = None
            _outcome(pending, WebhookDelivery.Outcome.REJECTED, 503, reason)
        release(pendings)


def _answer(pending: Pending) -> HookResult:
    delivery = pending.delivery
    return HookResult(
        delivery.status_code,
        {
            "status": delivery.outcome,
            "reason": delivery.reason,
            "delivery": delivery.pk,
        },
    )


def not_found(repository_name: str) -> HookResult:
    return HookResult(404, {"error": f"no repository named {repository_name[:100]!r}"})


def receive(
    forge_name: str,
    repository_name: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    remote_addr: str | None = None,
) -> HookResult:
    """Handle one webhook request synchronously; never raise for bad input."""
    started = time.perf_counter()
    try:
        get_forge(forge_name)
    except WebhookError as exc:
        return HookResult(exc.status, {"error": exc.message})
    # Check the name before querying: a name no repository can have (a NUL, 300
    # characters) is a plain 404, not a database error.
    if not NAME_VALIDATOR.regex.fullmatch(repository_name):
        return not_found(repository_name)
    repository, version = repositories.get(repository_name)
    for attempt in range(2):
        pending = (
            None
            if repository is None
            else examine(forge_name, repository, headers, body, started=started)
        )
        verdict = gate(pending, version)
        if verdict != STALE or attempt:
            break
        repository, version = repositories.load(repository_name)
    if pending is None:
        return not_found(repository_name)
    if verdict == SEEN:
        as_duplicate(pending)
    try:
        return record([pending])[0]
    except DatabaseError:
        release([pending])
        raise


# --- on a worker: start the run ------------------------------------------------------


def _trigger_arguments(event: PushEvent) -> dict[str, Any]:
    """Return services.trigger_run's arguments for EVENT (JSON, for the queue)."""
    trigger = {
        "push": Run.Trigger.PUSH,
        "tag": Run.Trigger.TAG,
        "merge_request": Run.Trigger.MERGE_REQUEST,
    }.get(event.event, Run.Trigger.WEBHOOK)
    if event.forge == "generic":
        trigger = Run.Trigger.WEBHOOK
    ref = event.ref
    if event.event == "merge_request" and event.mr_source_branch:
        ref = f"refs/heads/{event.mr_source_branch}"
    return {
        "trigger": str(trigger),
        "ref": ref,
        "sha": event.after if event.after and event.after.strip("0") else "",
        "before": event.before if event.before and event.before.strip("0") else "",
        "variables": dict(event.variables),
        "commit_message": _text(event.message),
        "commit_author": _text(event.author, 200),
    }


def create_run(delivery_pk: int, arguments: Mapping[str, Any]) -> Run | None:
    """Start the run of a queued delivery; None if it was started (or failed) before.

    Idempotent: the delivery row is locked and must still say "run queued", so a
    message delivered twice starts one run.
    """
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update()
            .filter(
                pk=delivery_pk,
                outcome=WebhookDelivery.Outcome.CREATED,
                run__isnull=True,
                reason=QUEUED,
            )
            .first()
        )
        if delivery is None or delivery.repository_id is None:
            return None
        repository = Repository.objects.get(pk=delivery.repository_id)
        try:
            with transaction.atomic():
                run = services.trigger_run(repository, **arguments)
        except services.ActionError as exc:
            delivery.reason = _text(f"run not created: {exc}", 500)
            delivery.save(update_fields=["reason"])
            return None
        delivery.run = run
        delivery.reason = f"run #{run.number} created"
        delivery.save(update_fields=["run", "reason"])
    return run


def create_queued_runs(
    limit: int = 1000,
    *,
    received_before: datetime | None = None,
    received_after: datetime | None = None,
) -> int:
    """Start the runs of deliveries still queued; return how many started.

    For recovery when the broker lost the create_webhook_runs messages (a Redis
    restart), called by ``services.redispatch_stalled``, and for tests: the
    arguments are read again from the stored body (complete up to
    MAX_STORED_BODY). RECEIVED_BEFORE leaves alone the deliveries whose message may
    still be in flight; RECEIVED_AFTER bounds the scan to recent ones (an index
    range on received_at). Idempotent: ``create_run`` claims each delivery under a
    row lock, so a message that arrives late, or a concurrent call, starts nothing.
    """
    started = 0
    queued = WebhookDelivery.objects.filter(
        outcome=WebhookDelivery.Outcome.CREATED, run__isnull=True, reason=QUEUED
    )
    if received_before is not None:
        queued = queued.filter(received_at__lt=received_before)
    if received_after is not None:
        queued = queued.filter(received_at__gte=received_after)
    for delivery in queued.order_by("pk")[:limit]:
        try:
            arguments = trigger_arguments_of(delivery)
        except WebhookError as exc:
            WebhookDelivery.objects.filter(pk=delivery.pk, reason=QUEUED).update(
                reason=_text(f"run not created: {exc.message}", 500)
            )
            continue
        if create_run(delivery.pk, arguments) is not None:
            started += 1
    return started


def trigger_arguments_of(delivery: WebhookDelivery) -> dict[str, Any]:
    """Return the run arguments of a recorded delivery, parsed from its stored body."""
    event = get_forge(delivery.forge).parse(
        dict(delivery.headers), delivery.body.encode()
    )
    return _trigger_arguments(event)


# --- redeliver (a person asks again; synchronous) ------------------------------------


def _start(repository: Repository, event: PushEvent) -> Run:
    return services.trigger_run(repository, **_trigger_arguments(event))


def redeliver(
    delivery: WebhookDelivery, *, user: Any = None, request: Any = None
) -> HookResult:
    """Process a stored delivery again as a new delivery (it may start a new run)."""
    if delivery.repository is None:
        raise services.ActionError("This delivery has no repository.")
    if delivery.outcome == WebhookDelivery.Outcome.REJECTED:
        raise services.ActionError("A rejected delivery cannot be redelivered.")
    payload = delivery.body.encode()
    event = get_forge(delivery.forge).parse(
        {k: v for k, v in delivery.headers.items()}, payload
    )
    with transaction.atomic():
        run = _start(delivery.repository, event)
        WebhookDelivery.objects.create(
            repository=delivery.repository,
            forge=delivery.forge,
            event=event.event,
            headers=delivery.headers,
            body=delivery.body,
            outcome=WebhookDelivery.Outcome.CREATED,
            status_code=201,
            reason=f"redelivered by {user.get_username() if user else 'system'}: run #{run.number}",
            run=run,
            redelivery_of=delivery,
        )
        audit.record("webhook.redeliver", actor=user, target=delivery, request=request)
    return HookResult(
        201, {"status": "created", "run": run.pk, "detail": json.dumps({})}
    )
