"""GitLab webhooks: ``X-Gitlab-Token`` verification and Push/Tag/MR hook parsing.

GitLab sends the configured secret itself in ``X-Gitlab-Token`` (no HMAC) and the event
in ``X-Gitlab-Event`` (``Push Hook``, ``Tag Push Hook``, ``Merge Request Hook``...).

Delivery ids (GitLab's ``WebHookService#build_headers``):

- ``Idempotency-Key`` (GitLab 17.4+) is one UUID per hook execution, kept on retries:
  exactly the redelivery key we want.
- ``X-Gitlab-Event-UUID`` is shared by every hook one request or push job triggers (a
  push that moves two branches sends two Push Hooks with the same value), so alone it
  would drop the second branch. We combine it with a hash of the body.
- ``X-Gitlab-Webhook-UUID`` is new on every attempt, retries included; it is useless for
  de-duplication and deliberately ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .base import (
    ZERO_SHA,
    BadPayload,
    Commit,
    MissingSignature,
    PushEvent,
    check_ref,
    check_sha,
    check_token,
    clean_delivery_id,
    get_int,
    get_obj,
    get_sha,
    get_str,
    header,
    load_json,
    opt_list,
    opt_obj,
    opt_str,
    path_list,
    redact,
    require_secret,
    split_ref,
    unique,
    unsupported,
)

NAME = "gitlab"

TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_UUID_HEADER = "X-Gitlab-Event-UUID"

PUSH_HOOK = "Push Hook"
TAG_PUSH_HOOK = "Tag Push Hook"
MERGE_REQUEST_HOOK = "Merge Request Hook"


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise unless ``X-Gitlab-Token`` equals ``secret`` (constant-time compare)."""
    require_secret(secret)
    given = header(headers, TOKEN_HEADER)
    if given is None:
        raise MissingSignature(f"missing header {TOKEN_HEADER}")
    check_token(given, secret)


def delivery_id(headers: Mapping[str, str], body: bytes) -> str | None:
    """Return ``Idempotency-Key``, else ``X-Gitlab-Event-UUID`` + body hash, or None."""
    try:
        key = clean_delivery_id(header(headers, IDEMPOTENCY_HEADER))
        if key:
            return key
        event_uuid = clean_delivery_id(header(headers, EVENT_UUID_HEADER))
    except BadPayload:
        return None
    if not event_uuid:
        return None
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"{event_uuid[:120]}:{digest}"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with the token and credentials replaced."""
    return redact(headers, (TOKEN_HEADER,))


def parse(headers: Mapping[str, str], body: bytes) -> PushEvent:
    """Normalise a GitLab webhook into a :class:`PushEvent`."""
    event_name = header(headers, EVENT_HEADER)
    if not event_name:
        raise BadPayload(f"missing header {EVENT_HEADER}")
    event_name = event_name.strip()
    delivery = delivery_id(headers, body)
    if event_name not in (PUSH_HOOK, TAG_PUSH_HOOK, MERGE_REQUEST_HOOK):
        # System Hook, Pipeline Hook, Note Hook...: recorded and ignored.
        return unsupported(NAME, event_name, delivery)
    data = load_json(body)
    if event_name == MERGE_REQUEST_HOOK:
        return _merge_request(data, delivery)
    return _push(data, event_name, delivery)


def _project_urls(project: Mapping[str, object] | None) -> tuple[str, ...]:
    if project is None:
        return ()
    return unique(
        opt_str(project, key)
        for key in (
            "git_http_url",
            "git_ssh_url",
            "http_url",
            "ssh_url",
            "url",
            "web_url",
            "path_with_namespace",
        )
    )


def _commit(raw: object, index: int) -> Commit:
    where = f"commits[{index}]"
    if not isinstance(raw, Mapping):
        raise BadPayload(f"field {where} must be an object")
    return Commit(
        sha=check_sha(get_str(raw, "id"), f"{where}.id"),
        message=opt_str(raw, "message") or "",
        author=opt_str(raw, "author.name") or "",
        url=opt_str(raw, "url"),
        added=path_list(raw, "added"),
        modified=path_list(raw, "modified"),
        removed=path_list(raw, "removed"),
    )


def _push(
    data: Mapping[str, object], event_name: str, delivery: str | None
) -> PushEvent:
    ref = check_ref(get_str(data, "ref"), "ref")
    branch, tag = split_ref(ref)
    if branch is None and tag is None:
        return unsupported(NAME, f"{event_name} to {ref}", delivery)
    after = get_sha(data, "after")
    commits = tuple(_commit(c, i) for i, c in enumerate(opt_list(data, "commits")))
    head = next(
        (c for c in commits if c.sha == after), commits[-1] if commits else None
    )
    # A Tag Push Hook carries the annotated tag's message at the top level.
    message = (opt_str(data, "message") if tag is not None else None) or (
        head.message if head else ""
    )
    urls = unique(_project_urls(opt_obj(data, "project")) + _repo_urls(data))
    if not urls:
        raise BadPayload("missing field project")
    return PushEvent(
        forge=NAME,
        event="tag" if tag is not None else "push",
        ref=ref,
        before=get_sha(data, "before"),
        after=after,
        branch=branch,
        tag=tag,
        repository_urls=urls,
        commits=commits,
        author=opt_str(data, "user_username") or opt_str(data, "user_name") or "",
        message=message,
        delivery_id=delivery,
        deleted=after == ZERO_SHA,
        forge_event=event_name,
    )


def _repo_urls(data: Mapping[str, object]) -> tuple[str, ...]:
    repo = opt_obj(data, "repository")
    if repo is None:
        return ()
    return unique(
        opt_str(repo, key) for key in ("git_http_url", "git_ssh_url", "url", "homepage")
    )


def _merge_request(data: Mapping[str, object], delivery: str | None) -> PushEvent:
    attrs = get_obj(data, "object_attributes")
    action = opt_str(attrs, "action") or ""
    oldrev = opt_str(attrs, "oldrev")
    # "update" fires for title and label edits too; only an oldrev means new commits.
    if not (action in ("open", "reopen") or (action == "update" and oldrev)):
        return unsupported(
            NAME, f"{MERGE_REQUEST_HOOK}.{action or 'unknown'}", delivery
        )
    iid = get_int(attrs, "iid")
    source = check_ref(
        get_str(attrs, "source_branch"), "object_attributes.source_branch"
    )
    target = check_ref(
        get_str(attrs, "target_branch"), "object_attributes.target_branch"
    )
    after = get_sha(attrs, "last_commit.id")
    before = check_sha(oldrev, "object_attributes.oldrev") if oldrev else ZERO_SHA
    target_urls = _project_urls(opt_obj(attrs, "target"))
    urls = unique(target_urls + _project_urls(opt_obj(data, "project")))
    if not urls:
        raise BadPayload("missing field project")
    title = opt_str(attrs, "title")
    return PushEvent(
        forge=NAME,
        event="merge_request",
        ref=f"refs/heads/{source}",
        before=before,
        after=after,
        branch=source,
        tag=None,
        repository_urls=urls,
        commits=(),
        author=opt_str(data, "user.username") or opt_str(data, "user.name") or "",
        message=opt_str(attrs, "last_commit.message") or title or "",
        delivery_id=delivery,
        deleted=False,
        forge_event=f"{MERGE_REQUEST_HOOK}.{action}",
        mr_number=iid,
        mr_source_branch=source,
        mr_target_branch=target,
        mr_head_ref=f"refs/merge-requests/{iid}/head",
        mr_title=title,
        mr_action=action,
        mr_source_repository_urls=_project_urls(opt_obj(attrs, "source")),
    )
