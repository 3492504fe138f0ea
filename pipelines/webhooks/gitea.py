"""Gitea and Forgejo webhooks: HMAC signature verification and push/PR parsing.

Both sign the raw body with HMAC-SHA256 and send the bare hex digest in
``X-Gitea-Signature`` (Forgejo: ``X-Forgejo-Signature``); they also send the GitHub
form ``X-Hub-Signature-256: sha256=<hex>`` and Gogs' ``X-Gogs-Signature``. Every one of
those present must match. The event is in ``X-Gitea-Event`` / ``X-Forgejo-Event``:
``push`` covers branches and tags (``refs/tags/...``); a deleted branch or tag arrives
as ``delete`` (Gitea sends no push for it); ``create`` duplicates a push and is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import (
    ZERO_SHA,
    BadPayload,
    Commit,
    MissingSignature,
    PushEvent,
    check_hmac,
    check_ref,
    check_sha,
    clean_delivery_id,
    first_header,
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

NAME = "gitea"

HEX_SIGNATURE_HEADERS = ("X-Forgejo-Signature", "X-Gitea-Signature", "X-Gogs-Signature")
GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADERS = ("X-Forgejo-Event", "X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event")
DELIVERY_HEADERS = (
    "X-Forgejo-Delivery",
    "X-Gitea-Delivery",
    "X-Gogs-Delivery",
    "X-GitHub-Delivery",
)

# Gitea says "synchronized"; accept GitHub's spelling too.
MR_ACTIONS = frozenset({"opened", "reopened", "synchronized", "synchronize"})


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise unless every signature header present is the body's HMAC under ``secret``."""
    require_secret(secret)
    checked = 0
    for name in HEX_SIGNATURE_HEADERS:
        given = header(headers, name)
        if given is not None:
            check_hmac(given, secret, body)
            checked += 1
    given = header(headers, GITHUB_SIGNATURE_HEADER)
    if given is not None:
        check_hmac(given, secret, body, prefix="sha256=")
        checked += 1
    if not checked:
        raise MissingSignature(
            "missing header X-Gitea-Signature (or X-Forgejo-Signature)"
        )


def delivery_id(headers: Mapping[str, str], body: bytes) -> str | None:
    """Return the ``X-Gitea-Delivery`` / ``X-Forgejo-Delivery`` id, or ``None``."""
    try:
        found = first_header(headers, *DELIVERY_HEADERS)
    except BadPayload:
        return None
    return clean_delivery_id(found[1]) if found else None


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with signatures and credentials replaced."""
    return redact(headers, (*HEX_SIGNATURE_HEADERS, GITHUB_SIGNATURE_HEADER))


def parse(headers: Mapping[str, str], body: bytes) -> PushEvent:
    """Normalise a Gitea or Forgejo webhook into a :class:`PushEvent`."""
    found = first_header(headers, *EVENT_HEADERS)
    if found is None or not found[1].strip():
        raise BadPayload("missing header X-Gitea-Event (or X-Forgejo-Event)")
    event_name = found[1].strip()
    delivery = delivery_id(headers, body)
    if event_name not in ("push", "delete", "pull_request"):
        return unsupported(NAME, event_name, delivery)
    data = load_json(body)
    if event_name == "push":
        return _push(data, delivery)
    if event_name == "delete":
        return _delete(data, delivery)
    action = get_str(data, "action")
    if action not in MR_ACTIONS:
        return unsupported(NAME, f"pull_request.{action}", delivery)
    return _pull_request(data, action, delivery)


def _repository_urls(repo: Mapping[str, object] | None) -> tuple[str, ...]:
    if repo is None:
        return ()
    return unique(
        opt_str(repo, key) for key in ("clone_url", "ssh_url", "html_url", "full_name")
    )


def _commit(raw: object, index: int) -> Commit:
    where = f"commits[{index}]"
    if not isinstance(raw, Mapping):
        raise BadPayload(f"field {where} must be an object")
    return Commit(
        sha=check_sha(get_str(raw, "id"), f"{where}.id"),
        message=opt_str(raw, "message") or "",
        author=opt_str(raw, "author.name") or opt_str(raw, "author.username") or "",
        url=opt_str(raw, "url"),
        added=path_list(raw, "added"),
        modified=path_list(raw, "modified"),
        removed=path_list(raw, "removed"),
    )


def _pusher(data: Mapping[str, object]) -> str:
    return (
        opt_str(data, "pusher.login")
        or opt_str(data, "pusher.username")
        or opt_str(data, "sender.login")
        or ""
    )


def _push(data: Mapping[str, object], delivery: str | None) -> PushEvent:
    ref = check_ref(get_str(data, "ref"), "ref")
    branch, tag = split_ref(ref)
    if branch is None and tag is None:
        return unsupported(NAME, f"push to {ref}", delivery)
    after = get_sha(data, "after")
    commits = tuple(_commit(c, i) for i, c in enumerate(opt_list(data, "commits")))
    head = opt_obj(data, "head_commit")
    message = (opt_str(head, "message") if head else None) or (
        next((c.message for c in commits if c.sha == after), "")
        or (commits[-1].message if commits else "")
    )
    return PushEvent(
        forge=NAME,
        event="tag" if tag is not None else "push",
        ref=ref,
        before=get_sha(data, "before"),
        after=after,
        branch=branch,
        tag=tag,
        repository_urls=_repository_urls(get_obj(data, "repository")),
        commits=commits,
        author=_pusher(data),
        message=message,
        delivery_id=delivery,
        deleted=after == ZERO_SHA,
        forge_event="push",
    )


def _delete(data: Mapping[str, object], delivery: str | None) -> PushEvent:
    name = check_ref(get_str(data, "ref"), "ref")
    ref_type = get_str(data, "ref_type")
    if ref_type == "branch":
        ref = name if name.startswith("refs/") else f"refs/heads/{name}"
    elif ref_type == "tag":
        ref = name if name.startswith("refs/") else f"refs/tags/{name}"
    else:
        return unsupported(NAME, f"delete {ref_type}", delivery)
    branch, tag = split_ref(ref)
    return PushEvent(
        forge=NAME,
        event="tag" if tag is not None else "push",
        ref=ref,
        before="",
        after=ZERO_SHA,
        branch=branch,
        tag=tag,
        repository_urls=_repository_urls(get_obj(data, "repository")),
        commits=(),
        author=_pusher(data),
        message="",
        delivery_id=delivery,
        deleted=True,
        forge_event="delete",
    )


def _pull_request(
    data: Mapping[str, object], action: str, delivery: str | None
) -> PushEvent:
    pr = get_obj(data, "pull_request")
    number = get_int(pr, "number")
    source = check_ref(get_str(pr, "head.ref"), "pull_request.head.ref")
    target = check_ref(get_str(pr, "base.ref"), "pull_request.base.ref")
    after = get_sha(pr, "head.sha")
    before_raw = opt_str(data, "before") if action.startswith("synchronize") else None
    before = check_sha(before_raw, "before") if before_raw else ZERO_SHA
    base_repo = opt_obj(pr, "base.repo") or get_obj(data, "repository")
    title = opt_str(pr, "title")
    return PushEvent(
        forge=NAME,
        event="merge_request",
        ref=f"refs/heads/{source}",
        before=before,
        after=after,
        branch=source,
        tag=None,
        repository_urls=_repository_urls(base_repo),
        commits=(),
        author=opt_str(data, "sender.login") or opt_str(pr, "user.login") or "",
        message=title or "",
        delivery_id=delivery,
        deleted=False,
        forge_event=f"pull_request.{action}",
        mr_number=number,
        mr_source_branch=source,
        mr_target_branch=target,
        mr_head_ref=f"refs/pull/{number}/head",
        mr_title=title,
        mr_action=action,
        mr_source_repository_urls=_repository_urls(opt_obj(pr, "head.repo")),
    )
