"""Report a run's status back to the forge as a commit status.

One request per report, to the forge's commit status API:

- GitHub: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with ``state`` (pending,
  success, failure, error), ``target_url``, ``description`` and ``context``;
  ``Authorization: Bearer <token>``.
- GitLab: ``POST {api}/projects/{id}/statuses/{sha}`` with ``state`` (pending,
  running, success, failed, canceled, skipped), ``name``, ``ref``, ``target_url``
  and ``description``; ``PRIVATE-TOKEN: <token>``. ``{id}`` is the project id or its
  URL-encoded path.
- Gitea and Forgejo: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with GitHub's
  fields (states pending, success, error, failure, warning);
  ``Authorization: token <token>``.

:func:`report` posts the run's status as it is when the report runs, not as it was
when the report was queued: a late or retried report never puts an older state back
over a newer one. Transient failures (network errors, 5xx, 408, 429) raise
:class:`ReportError`, an ``OSError``, which the ``report_commit_status`` task retries;
the forge refusing the request (other 4xx) is logged and dropped, since repeating it
cannot help. Nothing here can fail a run: reports run in their own task.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from django.conf import settings

from .models import Repository, Run

logger = logging.getLogger(__name__)

TIMEOUT = 10.0
CONTEXT = "slipway"
MAX_DESCRIPTION = 140  # GitHub rejects longer descriptions.

# Run status -> the forge's state, per forge family.
GITHUB_STATES = {
    Run.Status.CREATED: "pending",
    Run.Status.PENDING: "pending",
    Run.Status.RUNNING: "pending",
    Run.Status.SUCCESS: "success",
    Run.Status.FAILED: "failure",
    Run.Status.CANCELED: "error",
    Run.Status.SKIPPED: "success",
}
GITLAB_STATES = {
    Run.Status.CREATED: "pending",
    Run.Status.PENDING: "pending",
    Run.Status.RUNNING: "running",
    Run.Status.SUCCESS: "success",
    Run.Status.FAILED: "failed",
    Run.Status.CANCELED: "canceled",
    Run.Status.SKIPPED: "skipped",
}
GITEA_STATES = GITHUB_STATES

DESCRIPTIONS = {
    Run.Status.CREATED: "Run #{n} is queued",
    Run.Status.PENDING: "Run #{n} is waiting",
    Run.Status.RUNNING: "Run #{n} is running",
    Run.Status.SUCCESS: "Run #{n} passed",
    Run.Status.FAILED: "Run #{n} failed",
    Run.Status.CANCELED: "Run #{n} was canceled",
    Run.Status.SKIPPED: "Run #{n} was skipped",
}


class ReportError(OSError):
    """A transient failure to report: the Celery task retries it."""


class Refused(Exception):
    """The forge refused the status (bad token, unknown project): do not retry."""


@dataclass(frozen=True)
class StatusRequest:
    """One HTTP request that sets a commit status."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def _host(clone_url: str) -> str:
    if "://" in clone_url:
        return urlsplit(clone_url).hostname or ""
    if "@" in clone_url and ":" in clone_url:  # git@host:owner/name.git
        return clone_url.split("@", 1)[1].split(":", 1)[0]
    return ""


def api_base(repository: Repository) -> str:
    """Return the forge's API base URL: the configured one, else the usual one."""
    if repository.forge_api_url:
        return repository.forge_api_url.rstrip("/")
    host = _host(repository.clone_url)
    if not host:
        return ""
    if repository.forge == Repository.Forge.GITHUB:
        return (
            "https://api.github.com"
            if host == "github.com"
            else f"https://{host}/api/v3"
        )
    if repository.forge == Repository.Forge.GITLAB:
        return f"https://{host}/api/v4"
    if repository.forge in (Repository.Forge.GITEA, Repository.Forge.FORGEJO):
        return f"https://{host}/api/v1"
    return ""


def project(repository: Repository) -> str:
    """Return ``owner/name`` (or GitLab's project path or id) of the repository."""
    if repository.forge_project:
        return repository.forge_project.strip().strip("/")
    url = repository.clone_url.strip()
    if "://" in url:
        path = urlsplit(url).path
    elif "@" in url and ":" in url:
        path = url.split(":", 1)[1]
    else:
        return ""
    path = path.strip("/").removesuffix(".git")
    return path if "/" in path else ""


def _description(run: Run) -> str:
    text = DESCRIPTIONS.get(run.status, "Run #{n}").format(n=run.number)
    if run.status in (Run.Status.FAILED, Run.Status.SKIPPED) and run.status_reason:
        text = f"{text}: {run.status_reason}"
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def build_request(run: Run) -> StatusRequest | None:
    """Return the request that reports RUN, or None when there is nothing to send."""
    repository = run.repository
    token = repository.https_token
    if not token or not run.commit_sha:
        return None
    base, name = api_base(repository), project(repository)
    if urlsplit(base).scheme not in ("http", "https") or not name:
        return None
    target_url = settings.SITE_URL + run.get_absolute_url()
    description = _description(run)
    sha = quote(run.commit_sha, safe="")
    forge = repository.forge
    if forge == Repository.Forge.GITLAB:
        body: dict[str, Any] = {
            "state": GITLAB_STATES[run.status],
            "name": CONTEXT,
            "target_url": target_url,
            "description": description,
        }
        if run.branch or run.tag:
            body["ref"] = run.branch or run.tag
        return StatusRequest(
            url=f"{base}/projects/{quote(name, safe='')}/statuses/{sha}",
            headers={"PRIVATE-TOKEN": token},
            body=body,
        )
    if forge == Repository.Forge.GITHUB:
        states, auth = GITHUB_STATES, f"Bearer {token}"
        extra = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    elif forge in (Repository.Forge.GITEA, Repository.Forge.FORGEJO):
        states, auth, extra = GITEA_STATES, f"token {token}", {}
    else:
        return None
    owner_repo = "/".join(quote(part, safe="") for part in name.split("/"))
    return StatusRequest(
        url=f"{base}/repos/{owner_repo}/statuses/{sha}",
        headers={"Authorization": auth, **extra},
        body={
            "state": states[run.status],
            "target_url": target_url,
            "description": description,
            "context": CONTEXT,
        },
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would follow a redirect with the token header still attached, to any
    # host: refuse instead (the API base URL is wrong if the forge redirects).
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def send(request: StatusRequest) -> int:
    """POST REQUEST; return the HTTP status.

    Raise :class:`ReportError` for failures worth retrying and :class:`Refused` when
    the forge rejected the request for good.
    """
    http_request = urllib.request.Request(
        request.url,
        data=json.dumps(request.body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Slipway",
            **request.headers,
        },
    )
    try:
        with _opener.open(http_request, timeout=TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        exc.close()
        if exc.code >= 500 or exc.code in (408, 429):
            raise ReportError(f"forge answered {exc.code}: {detail}") from None
        raise Refused(f"forge answered {exc.code}: {detail}") from None
    except (OSError, ValueError) as exc:
        # URLError, timeouts, refused connections, TLS errors: try again later.
        raise ReportError(f"could not reach the forge: {exc}") from None


def report(run_id: int) -> None:
    """Post the run's current status to the forge when the repository has a token.

    Raise :class:`ReportError` (an ``OSError``) when a retry may succeed.
    """
    run = Run.objects.select_related("repository").filter(pk=run_id).first()
    if run is None:
        return
    request = build_request(run)
    if request is None:
        return
    try:
        status = send(request)
    except Refused as exc:
        logger.error(
            "commit status for run %s (%s) refused: %s", run_id, request.url, exc
        )
        return
    except ReportError as exc:
        logger.warning(
            "commit status for run %s (%s) failed, will retry: %s",
            run_id,
            request.url,
            exc,
        )
        raise
    logger.info(
        "reported %s for run %s to %s (%s)",
        request.body["state"],
        run_id,
        request.url,
        status,
    )
