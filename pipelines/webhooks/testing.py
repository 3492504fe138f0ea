"""Build correctly signed webhook requests, as each forge would send them, for tests.

The bodies start from the forges' documented example payloads (kept in
``pipelines/tests/payloads/``) with the repository, refs and commits replaced, so a test
posting them to the live endpoint exercises the same structure production sees::

    headers, body = signed_request(
        "github", secret, ref="refs/heads/main", before=old, after=new,
        repo_url=str(origin), commits=[new],
    )
    client.post(url, data=body, content_type=headers["Content-Type"], headers=headers)

Not for production code paths.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from .base import ZERO_SHA, Commit, hmac_sha256_hex

PAYLOADS = Path(__file__).resolve().parent.parent / "tests" / "payloads"

Event = Literal["push", "tag", "merge_request", "ping"]
CommitLike = Commit | str | Mapping[str, Any]

_TIMESTAMP = "2024-05-15T15:19:25Z"


@cache
def _template(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text("utf-8"))
    return data


def load_payload(name: str) -> dict[str, Any]:
    """Return a fresh copy of the fixture ``name`` (e.g. ``"github/push.json"``)."""
    return copy.deepcopy(_template(name))


def _commit(value: CommitLike) -> Commit:
    if isinstance(value, Commit):
        return value
    if isinstance(value, str):
        return Commit(sha=value, message=f"Commit {value[:8]}", author="Slipway Test")
    return Commit(
        sha=str(value["sha"]),
        message=str(value.get("message", "")),
        author=str(value.get("author", "Slipway Test")),
        url=value.get("url"),
        added=tuple(value.get("added", ())),
        modified=tuple(value.get("modified", ())),
        removed=tuple(value.get("removed", ())),
    )


def _names(repo_url: str) -> tuple[str, str, str]:
    """Return ``(owner/name, name, web url)`` derived from a clone URL or path."""
    web = repo_url[:-4] if repo_url.endswith(".git") else repo_url
    parts = [p for p in web.replace(":", "/").split("/") if p]
    name = parts[-1] if parts else "repo"
    owner = parts[-2] if len(parts) > 1 else "slipway"
    return f"{owner}/{name}", name, web


def _short(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _normalise_ref(event: str, ref: str) -> str:
    if event == "tag" and not ref.startswith("refs/tags/"):
        return f"refs/tags/{_short(ref)}"
    if event in ("push", "merge_request") and not ref.startswith("refs/"):
        return f"refs/heads/{ref}"
    return ref


# --- GitHub ------------------------------------------------------------------------


def _github_repo(repo: dict[str, Any], repo_url: str) -> None:
    full, name, web = _names(repo_url)
    repo.update(
        name=name,
        full_name=full,
        html_url=web,
        url=web,
        clone_url=repo_url,
        ssh_url=repo_url,
        git_url=repo_url,
        svn_url=web,
    )


def _github_commit(c: Commit, web: str) -> dict[str, Any]:
    email = "test@slipway.invalid"
    return {
        "id": c.sha,
        "tree_id": hashlib.sha1(c.sha.encode()).hexdigest(),
        "distinct": True,
        "message": c.message,
        "timestamp": _TIMESTAMP,
        "url": c.url or f"{web}/commit/{c.sha}",
        "author": {"name": c.author, "email": email, "username": c.author},
        "committer": {"name": c.author, "email": email},
        "added": list(c.added),
        "removed": list(c.removed),
        "modified": list(c.modified),
    }


def github_payload(
    event: Event,
    *,
    ref: str,
    before: str,
    after: str,
    repo_url: str,
    commits: Sequence[Commit],
    mr_number: int,
    target_branch: str,
) -> tuple[str, dict[str, Any]]:
    """Return ``(X-GitHub-Event, payload)`` built on GitHub's documented examples."""
    _, _, web = _names(repo_url)
    if event == "ping":
        data = load_payload("github/ping.json")
        _github_repo(data["repository"], repo_url)
        return "ping", data
    if event == "merge_request":
        data = load_payload("github/pull_request_synchronize.json")
        pr = data["pull_request"]
        data["action"] = "opened" if before == ZERO_SHA else "synchronize"
        data["number"] = pr["number"] = mr_number
        if before == ZERO_SHA:
            data.pop("before", None)
            data.pop("after", None)
        else:
            data["before"], data["after"] = before, after
        pr["head"].update(ref=_short(ref), sha=after, label=f"slipway:{_short(ref)}")
        pr["base"].update(ref=target_branch, label=f"slipway:{target_branch}")
        for repo in (pr["head"]["repo"], pr["base"]["repo"], data["repository"]):
            _github_repo(repo, repo_url)
        return "pull_request", data
    data = load_payload("github/push.json")
    data.update(
        ref=ref,
        before=before,
        after=after,
        created=before == ZERO_SHA,
        deleted=after == ZERO_SHA,
        compare=f"{web}/compare/{before[:12]}...{after[:12]}",
    )
    payload_commits = [_github_commit(c, web) for c in commits]
    data["commits"] = payload_commits
    data["head_commit"] = payload_commits[-1] if payload_commits else None
    if not payload_commits and after != ZERO_SHA:
        data["head_commit"] = _github_commit(_commit(after), web)
    _github_repo(data["repository"], repo_url)
    return "push", data


# --- GitLab ------------------------------------------------------------------------


def _gitlab_project(project: dict[str, Any], repo_url: str) -> None:
    full, name, web = _names(repo_url)
    for key in ("git_http_url", "git_ssh_url", "http_url", "ssh_url", "url"):
        if key in project:
            project[key] = repo_url
    project.update(name=name, web_url=web, path_with_namespace=full, homepage=web)


def _gitlab_commit(c: Commit, web: str) -> dict[str, Any]:
    return {
        "id": c.sha,
        "message": c.message,
        "title": c.message.splitlines()[0] if c.message else "",
        "timestamp": _TIMESTAMP,
        "url": c.url or f"{web}/-/commit/{c.sha}",
        "author": {"name": c.author, "email": "test@slipway.invalid"},
        "added": list(c.added),
        "modified": list(c.modified),
        "removed": list(c.removed),
    }


def gitlab_payload(
    event: Event,
    *,
    ref: str,
    before: str,
    after: str,
    repo_url: str,
    commits: Sequence[Commit],
    mr_number: int,
    target_branch: str,
) -> tuple[str, dict[str, Any]]:
    """Return ``(X-Gitlab-Event, payload)`` built on GitLab's documented examples."""
    _, _, web = _names(repo_url)
    if event == "ping":
        raise ValueError("GitLab has no ping event; its test delivery is a Push Hook")
    if event == "merge_request":
        data = load_payload("gitlab/merge_request_hook.json")
        attrs = data["object_attributes"]
        attrs.update(
            iid=mr_number, source_branch=_short(ref), target_branch=target_branch
        )
        attrs["last_commit"].update(id=after, url=f"{web}/-/commit/{after}")
        if before == ZERO_SHA:
            attrs["action"] = "open"
            attrs.pop("oldrev", None)
        else:
            attrs["action"] = "update"
            attrs["oldrev"] = before
        for project in (data["project"], attrs["source"], attrs["target"]):
            _gitlab_project(project, repo_url)
        data["repository"].update(url=repo_url, homepage=web)
        return "Merge Request Hook", data
    if event == "tag":
        data = load_payload("gitlab/tag_push_hook.json")
        name = "Tag Push Hook"
    else:
        data = load_payload("gitlab/push_hook.json")
        name = "Push Hook"
    data.update(
        ref=ref,
        before=before,
        after=after,
        checkout_sha=None if after == ZERO_SHA else after,
        commits=[_gitlab_commit(c, web) for c in commits],
        total_commits_count=len(commits),
    )
    _gitlab_project(data["project"], repo_url)
    data["repository"].update(
        url=repo_url, git_http_url=repo_url, git_ssh_url=repo_url, homepage=web
    )
    return name, data


# --- Gitea / Forgejo ---------------------------------------------------------------


def _gitea_repo(repo: dict[str, Any], repo_url: str) -> dict[str, Any]:
    full, name, web = _names(repo_url)
    repo.update(
        name=name, full_name=full, html_url=web, clone_url=repo_url, ssh_url=repo_url
    )
    return repo


def _gitea_commit(c: Commit, web: str) -> dict[str, Any]:
    person = {"name": c.author, "email": "test@slipway.invalid", "username": c.author}
    return {
        "id": c.sha,
        "message": c.message,
        "url": c.url or f"{web}/commit/{c.sha}",
        "author": person,
        "committer": person,
        "timestamp": _TIMESTAMP,
        "added": list(c.added),
        "removed": list(c.removed),
        "modified": list(c.modified),
    }


def gitea_payload(
    event: Event,
    *,
    ref: str,
    before: str,
    after: str,
    repo_url: str,
    commits: Sequence[Commit],
    mr_number: int,
    target_branch: str,
) -> tuple[str, dict[str, Any]]:
    """Return ``(X-Gitea-Event, payload)`` built on Gitea's documented push example.

    A deleted branch or tag becomes a ``delete`` event, as Gitea sends it. Gitea
    documents no pull request example; that payload follows its ``PullRequestPayload``
    API struct with the documented push example's repository and user objects.
    """
    _, _, web = _names(repo_url)
    template = load_payload("gitea/push.json")
    template.pop("secret", None)  # Deprecated since Gitea 1.13 and removed in 1.14.
    repo = _gitea_repo(template["repository"], repo_url)
    if event == "ping":
        raise ValueError("Gitea has no ping event; its test delivery is a push")
    if event == "merge_request":
        user = template["sender"]
        head = {
            "label": _short(ref),
            "ref": _short(ref),
            "sha": after,
            "repo_id": repo["id"],
            "repo": repo,
        }
        base = {
            "label": target_branch,
            "ref": target_branch,
            "sha": before if before != ZERO_SHA else after,
            "repo_id": repo["id"],
            "repo": repo,
        }
        pr = {
            "id": 1000 + mr_number,
            "url": f"{web}/pulls/{mr_number}",
            "number": mr_number,
            "user": user,
            "title": f"Merge {_short(ref)} into {target_branch}",
            "body": "",
            "state": "open",
            "html_url": f"{web}/pulls/{mr_number}",
            "mergeable": True,
            "merged": False,
            "head": head,
            "base": base,
        }
        data: dict[str, Any] = {
            "action": "opened" if before == ZERO_SHA else "synchronized",
            "number": mr_number,
            "pull_request": pr,
            "repository": repo,
            "sender": user,
            "commit_id": "",
            "review": None,
        }
        if before != ZERO_SHA:
            data["before"], data["after"] = before, after
        return "pull_request", data
    if after == ZERO_SHA:
        return "delete", {
            "ref": _short(ref),
            "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
            "pusher_type": "user",
            "repository": repo,
            "sender": template["sender"],
        }
    payload_commits = [_gitea_commit(c, web) for c in commits]
    template.update(
        ref=ref,
        before=before,
        after=after,
        compare_url=f"{web}/compare/{before}...{after}",
        commits=payload_commits,
    )
    template["head_commit"] = payload_commits[-1] if payload_commits else None
    return "push", template


# --- signing -----------------------------------------------------------------------


def signed_request(
    forge: str,
    secret: str,
    *,
    event: Event = "push",
    ref: str = "refs/heads/main",
    before: str = ZERO_SHA,
    after: str,
    repo_url: str,
    commits: Sequence[CommitLike] = (),
    delivery_id: str | None = None,
    mr_number: int = 1,
    target_branch: str = "main",
    variables: Mapping[str, str] | None = None,
    form_encoded: bool = False,
) -> tuple[dict[str, str], bytes]:
    """Return ``(headers, body)`` of a request ``forge`` would send, signed with ``secret``.

    ``forge`` is ``github``, ``gitlab``, ``gitea``, ``forgejo`` or ``generic``. A deleted
    branch is ``after=ZERO_SHA``; a tag is ``event="tag"`` (a bare or ``refs/heads/``
    ref is turned into ``refs/tags/...``). For ``merge_request``, ``ref`` is the source
    branch and ``before`` the previous head (``ZERO_SHA``: a newly opened request).
    ``form_encoded`` sends GitHub's ``application/x-www-form-urlencoded`` variant.
    """
    forge = forge.lower()
    ref = _normalise_ref(event, ref)
    delivery = delivery_id or str(uuid.uuid4())
    commit_list = [_commit(c) for c in commits]
    kwargs: dict[str, Any] = dict(
        ref=ref,
        before=before,
        after=after,
        repo_url=repo_url,
        commits=commit_list,
        mr_number=mr_number,
        target_branch=target_branch,
    )
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if forge == "github":
        name, data = github_payload(event, **kwargs)
        body = json.dumps(data).encode()
        if form_encoded:
            body = urlencode({"payload": body.decode()}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers.update(
            {
                "User-Agent": "GitHub-Hookshot/044aadd",
                "X-GitHub-Event": name,
                "X-GitHub-Delivery": delivery,
                "X-GitHub-Hook-ID": "292430182",
                "X-Hub-Signature": "sha1="
                + hmac.new(secret.encode(), body, "sha1").hexdigest(),
                "X-Hub-Signature-256": "sha256=" + hmac_sha256_hex(secret, body),
            }
        )
        return headers, body
    if forge == "gitlab":
        name, data = gitlab_payload(event, **kwargs)
        body = json.dumps(data).encode()
        headers.update(
            {
                "User-Agent": "GitLab/17.5.0",
                "X-Gitlab-Event": name,
                "X-Gitlab-Token": secret,
                "X-Gitlab-Instance": "https://gitlab.example.com",
                "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
                "X-Gitlab-Event-UUID": str(uuid.uuid4()),
                "Idempotency-Key": delivery,
            }
        )
        return headers, body
    if forge in ("gitea", "forgejo"):
        name, data = gitea_payload(event, **kwargs)
        body = json.dumps(data).encode()
        signature = hmac_sha256_hex(secret, body)
        event_type = name
        if name == "pull_request" and data.get("action") == "synchronized":
            event_type = "pull_request_sync"
        vendors = (
            ("Gitea", "Gogs") if forge == "gitea" else ("Forgejo", "Gitea", "Gogs")
        )
        for vendor in vendors:
            headers[f"X-{vendor}-Delivery"] = delivery
            headers[f"X-{vendor}-Event"] = name
            headers[f"X-{vendor}-Signature"] = signature
        headers[f"X-{vendors[0]}-Event-Type"] = event_type
        headers.update(
            {
                "X-GitHub-Delivery": delivery,
                "X-GitHub-Event": name,
                "X-GitHub-Event-Type": event_type,
                "X-Hub-Signature-256": "sha256=" + signature,
            }
        )
        return headers, body
    if forge == "generic":
        if event not in ("push", "tag"):
            raise ValueError("generic triggers are pushes or tags only")
        generic_body: dict[str, Any] = {
            "ref": ref,
            "after": after,
            "repository": repo_url,
            "delivery_id": delivery,
        }
        if before != ZERO_SHA:
            generic_body["before"] = before
        if variables:
            generic_body["variables"] = dict(variables)
        headers.update(
            {"Authorization": f"Bearer {secret}", "X-Slipway-Delivery": delivery}
        )
        return headers, json.dumps(generic_body).encode()
    raise ValueError(f"unknown forge {forge!r}")
