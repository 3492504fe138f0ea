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

from django.db import IntegrityError, transaction

from core import audit

from . import services
from .models import Repository, Run, WebhookDelivery
from .webhooks import PushEvent, WebhookError, get_forge

MAX_STORED_BODY = 256 * 1024


@dataclass(frozen=True)
class HookResult:
    """What to answer the forge."""

    status: int
    body: dict[str, Any]


def _matches(name: str, patterns: str) -> bool:
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    return not globs or any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def _ignore_reason(repository: Repository, event: PushEvent) -> str:
    if event.event == "ping":
        return "ping: the forge checked the hook"
    if event.ignored:
        return f"event {event.forge_event or 'unknown'} not handled"
    if event.deleted:
        return f"{event.ref} was deleted"
    if (
        event.event == "tag"
        and event.tag
        and not _matches(event.tag, repository.tag_filter)
    ):
        return (
            f"tag {event.tag} does not match the tag filter {repository.tag_filter!r}"
        )
    if event.branch and not _matches(event.branch, repository.branch_filter):
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
    repository = Repository.objects.filter(name=repository_name).first()
    if repository is None:
        return HookResult(
            404, {"error": f"no repository named {repository_name[:100]!r}"}
        )
    delivery = WebhookDelivery(
        repository=repository,
        forge=forge_name,
        headers=forge.redact_headers(headers),
        body=body[:MAX_STORED_BODY].decode("utf-8", "replace"),
        redelivery_of=redelivery_of,
    )

    def done(
        outcome: str, status: int, reason: str, run: Run | None = None
    ) -> HookResult:
        delivery.outcome, delivery.status_code, delivery.reason = (
            outcome,
            status,
            reason[:500],
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
        commit_message=event.message,
        commit_author=event.author,
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
