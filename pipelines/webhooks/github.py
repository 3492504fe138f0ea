"""GitHub webhooks: ``X-Hub-Signature-256`` verification and push/PR/ping parsing.

GitHub signs the raw body with HMAC-SHA256 (``sha256=<hex>``), names the event in
``X-GitHub-Event`` and the delivery in ``X-GitHub-Delivery`` (a redelivery keeps it). A
hook may use either content type: ``application/json`` or
``application/x-www-form-urlencoded`` with the JSON in the ``payload`` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

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

NAME = "github"

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"

# Pull request actions that put new code in front of CI.
MR_ACTIONS = frozenset({"opened", "synchronize", "reopened"})


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise unless ``X-Hub-Signature-256`` is the body's HMAC-SHA256 under ``secret``."""
    require_secret(secret)
    given = header(headers, SIGNATURE_HEADER)
    if given is None:
        raise MissingSignature(f"missing header {SIGNATURE_HEADER}")
    check_hmac(given, secret, body, prefix="sha256=")


def delivery_id(headers: Mapping[str, str], body: bytes) -> str | None:
    """Return ``X-GitHub-Delivery`` (kept by GitHub on redelivery), or ``None``."""
    try:
        return clean_delivery_id(header(headers, DELIVERY_HEADER))
    except BadPayload:
        return None


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with the signature and credentials replaced."""
    return redact(headers, (SIGNATURE_HEADER, "X-Hub-Signature"))


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, object]:
    content_type = (header(headers, "Content-Type") or "").split(";", 1)[0].strip()
    if content_type.lower() == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadPayload(f"form body is malformed: {exc}") from None
        values = form.get("payload")
        if not values or len(values) != 1:
            raise BadPayload("missing field payload in form body")
        return load_json(values[0].encode("utf-8", "surrogatepass"))
    return load_json(body)


def parse(headers: Mapping[str, str], body: bytes) -> PushEvent:
    """Normalise a GitHub webhook into a :class:`PushEvent`."""
    event_name = header(headers, EVENT_HEADER)
    if not event_name:
        raise BadPayload(f"missing header {EVENT_HEADER}")
    event_name = event_name.strip()
    delivery = delivery_id(headers, body)
    data = _payload(headers, body)
    if event_name == "ping":
        return _ping(data, delivery)
    if event_name == "push":
        return _push(data, delivery)
    if event_name == "pull_request":
        action = get_str(data, "action")
        if action in MR_ACTIONS:
            return _pull_request(data, action, delivery)
        return unsupported(NAME, f"pull_request.{action}", delivery)
    return unsupported(NAME, event_name, delivery)


def _repository_urls(repo: Mapping[str, object] | None) -> tuple[str, ...]:
    if repo is None:
        return ()
    return unique(
        opt_str(repo, key)
        for key in (
            "clone_url",
            "ssh_url",
            "git_url",
            "html_url",
            "svn_url",
            "full_name",
        )
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


def _ping(data: Mapping[str, object], delivery: str | None) -> PushEvent:
    return PushEvent(
        forge=NAME,
        event="ping",
        ref="",
        before="",
        after="",
        branch=None,
        tag=None,
        repository_urls=_repository_urls(opt_obj(data, "repository")),
        commits=(),
        author=opt_str(data, "sender.login") or "",
        message=opt_str(data, "zen") or "",
        delivery_id=delivery,
        deleted=False,
        forge_event="ping",
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
        commits[-1].message if commits else ""
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
        author=opt_str(data, "pusher.name") or opt_str(data, "sender.login") or "",
        message=message,
        delivery_id=delivery,
        deleted=after == ZERO_SHA,
        forge_event="push",
    )


def _pull_request(
    data: Mapping[str, object], action: str, delivery: str | None
) -> PushEvent:
    pr = get_obj(data, "pull_request")
    number = get_int(pr, "number")
    source = check_ref(get_str(pr, "head.ref"), "pull_request.head.ref")
    target = check_ref(get_str(pr, "base.ref"), "pull_request.base.ref")
    after = check_sha(get_str(pr, "head.sha"), "pull_request.head.sha")
    # Only "synchronize" carries the previous head; opened/reopened start from nothing.
    before_raw = opt_str(data, "before") if action == "synchronize" else None
    before = check_sha(before_raw, "before") if before_raw else ZERO_SHA
    head_repo = opt_obj(pr, "head.repo")
    base_repo = opt_obj(pr, "base.repo") or get_obj(data, "repository")
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
        message=opt_str(pr, "title") or "",
        delivery_id=delivery,
        deleted=False,
        forge_event=f"pull_request.{action}",
        mr_number=number,
        mr_source_branch=source,
        mr_target_branch=target,
        mr_head_ref=f"refs/pull/{number}/head",
        mr_title=opt_str(pr, "title"),
        mr_action=action,
        mr_source_repository_urls=_repository_urls(head_repo),
    )
