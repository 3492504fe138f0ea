"""Receive a forge webhook: verify, deduplicate, record, and start at most one run.

The request does only cheap work (a signature check, two inserts) and queues the rest,
so the forge always gets its answer well within its delivery timeout.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from core import audit

from . import services
from .models import NAME_VALIDATOR, Repository, Run, WebhookDelivery
from .webhooks import PushEvent, WebhookError, get_forge

MAX_STORED_BODY = 256 * 1024
# Run.ref and Run.branch/tag column sizes.
MAX_REF = 300
MAX_NAME = 255


@dataclass(frozen=True)
class HookResult:
    """What to answer the forge."""

    status: int
    body: dict[str, Any]


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


def _ignore_reason(repository: Repository, event: PushEvent) -> str:
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


def receive(
    forge_name: str,
    repository_name: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    remote_addr: str | None = None,
    redelivery_of: WebhookDelivery | None = None,
) -> HookResult:
    """Handle one webhook request; never raise for bad input."""
    started = time.perf_counter()
    try:
        forge = get_forge(forge_name)
    except WebhookError as exc:
        return HookResult(exc.status, {"error": exc.message})
    # Check the name before querying: a name no repository can have (a NUL, 300
    # characters) is a plain 404, not a database error.
    repository = (
        Repository.objects.filter(name=repository_name).first()
        if NAME_VALIDATOR.regex.fullmatch(repository_name)
        else None
    )
    if repository is None:
        return HookResult(
            404, {"error": f"no repository named {repository_name[:100]!r}"}
        )
    delivery = WebhookDelivery(
        repository=repository,
        # The normalised name: the URL may say " GitHub" or "FORGEJO".
        forge=forge_name.strip().lower(),
        headers=_headers(forge.redact_headers(headers)),
        body=_text(body[:MAX_STORED_BODY].decode("utf-8", "replace")),
        redelivery_of=redelivery_of,
    )

    def done(
        outcome: str, status: int, reason: str, run: Run | None = None
    ) -> HookResult:
        delivery.outcome, delivery.status_code, delivery.reason = (
            outcome,
            status,
            _text(reason, 500),
        )
        delivery.run = run
        delivery.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        delivery.save()
        answer: dict[str, Any] = {
            "status": outcome,
            "reason": reason,
            "delivery": delivery.pk,
        }
        if run is not None:
            answer["run"] = run.pk
            answer["url"] = run.get_absolute_url()
        return HookResult(status, answer)

    limit = settings.SLIPWAY["WEBHOOK_MAX_BYTES"]
    if len(body) > limit:
        # The view checks Content-Length; this also covers chunked bodies and
        # callers other than the view.
        return done(
            WebhookDelivery.Outcome.REJECTED, 413, f"body larger than {limit} bytes"
        )
    try:
        forge.verify(headers, body, repository.webhook_secret)
        delivery.delivery_id = (
            forge.delivery_id(headers, body) if redelivery_of is None else None
        )
        event = forge.parse(headers, body)
    except WebhookError as exc:
        return done(WebhookDelivery.Outcome.REJECTED, exc.status, exc.message)
    delivery.event = event.event
    if delivery.delivery_id and _seen(repository, delivery.delivery_id):
        return done(WebhookDelivery.Outcome.DUPLICATE, 200, "delivery seen before")
    reason = _ignore_reason(repository, event)
    if reason:
        return done(WebhookDelivery.Outcome.IGNORED, 200, reason)
    try:
        with transaction.atomic():
            run = _start(repository, event)
            result = done(
                WebhookDelivery.Outcome.CREATED, 201, f"run #{run.number} created", run
            )
    except IntegrityError:
        # A concurrent redelivery won the unique (repository, delivery_id) row.
        delivery.pk = None
        return done(WebhookDelivery.Outcome.DUPLICATE, 200, "delivery seen before")
    return result


def _seen(repository: Repository, delivery_id: str) -> bool:
    return WebhookDelivery.objects.filter(
        repository=repository,
        delivery_id=delivery_id,
        outcome=WebhookDelivery.Outcome.CREATED,
    ).exists()


def _start(repository: Repository, event: PushEvent) -> Run:
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
    sha = event.after if event.after and event.after.strip("0") else ""
    before = event.before if event.before and event.before.strip("0") else ""
    run = services.trigger_run(
        repository,
        trigger=trigger,
        ref=ref,
        sha=sha,
        before=before,
        variables=dict(event.variables),
        commit_message=_text(event.message),
        commit_author=_text(event.author, 200),
    )
    return run


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
