"""Dashboard rows rendered without the template engine's per-row cost.

A run row holds some twenty variables, filters and tags. The Django template engine
resolves each through several layers (about 20 µs each), so a 50-row table took most
of a page's server time with 100,000 runs (docs/performance.md). ``{% run_rows %}``,
``{% activity_items %}``, ``{% job_rows %}`` and ``{% job_actions %}`` build the same
markup with string formatting; every value is escaped as autoescaping would, and
pipelines/tests/test_dashboard_render.py checks that. The markup is kept in the
format strings below, one per kind of row: edit them as you would a template.

The trends card changes only when the per-minute trend figures do, so
``{% trends_card %}`` keeps its HTML for the last figures it rendered.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from threading import Lock
from typing import Any
from urllib.parse import quote

from django import template
from django.template.defaultfilters import truncatechars
from django.template.loader import get_template
from django.utils import timezone
from django.utils.dates import MONTHS_3
from django.utils.safestring import SafeString, mark_safe

from pipelines.queries import id_url

register = template.Library()

# The markup of one run row. Cells: status, commit and run, branch and commit, duration
# and age. The JavaScript keys on data-run-id, data-status-for and data-duration-for.
ROW = """<tr data-run-id="{id}">
  <td class="nowrap" style="width:1%"><span class="badge status-{status}" data-status-for="run-{id}">{status}</span></td>
  <td>
    <div class="sw-commit">
      <a class="sw-commit-title" href="{url}" title="{title}">{title}</a>
      <div class="sw-meta">
        {repository}<a href="{url}" class="sw-num">#{number}</a>
        <span>{trigger}{who}</span>
      </div>
    </div>
  </td>
  <td class="nowrap">
    <div class="sw-refs">
      {ref}{sha}
    </div>
  </td>
  <td class="num">
    <div class="sw-when">
      <span class="sw-dur" data-duration-for="run-{id}">{duration}</span>
      <time data-relative datetime="{created_iso}">{created}</time>
    </div>
  </td>
</tr>
"""


def escape(value: Any) -> str:
    """Escape VALUE for HTML text and attributes, exactly as autoescaping does."""
    # django.utils.html.escape is html.escape behind a lazy-string wrapper that costs
    # more than the escaping itself; these values are never lazy.
    return html.escape(str(value))


def truncate(value: str, length: int) -> str:
    """Return ``value|truncatechars:length`` (the filter only for long or non-ASCII)."""
    if len(value) <= length and value.isascii():
        return value
    return truncatechars(value, length)


class _Row:
    """What one ``run_rows`` call shares between its rows (URLs, labels, zone)."""

    def __init__(self, show_repository: bool) -> None:
        self.show_repository = show_repository
        self.tz = timezone.get_current_timezone()
        self.run_url = id_url("pipelines:run-detail")
        self.repo_urls: dict[int, str] = {}
        self.triggers: dict[str, str] = {}
        self.months = {m: str(name).title() for m, name in MONTHS_3.items()}

    def when(self, value: datetime) -> tuple[str, str]:
        """Return VALUE as ``|date:'c'`` and ``|date:"M j, H:i"`` show it."""
        if timezone.is_aware(value):
            value = value.astimezone(self.tz)
        short = f"{self.months[value.month]} {value.day}, {value:%H:%M}"
        return value.isoformat(), short

    def render(self, run: Any) -> str:
        """Return one run's ``<tr>``."""
        url = escape(self.run_url(run.pk))
        repository = run.repository
        repo_url = self.repo_urls.get(repository.pk)
        if repo_url is None:
            repo_url = escape(repository.get_absolute_url())
            self.repo_urls[repository.pk] = repo_url
        trigger = self.triggers.get(run.trigger)
        if trigger is None:
            trigger = escape(run.get_trigger_display().lower())
            self.triggers[run.trigger] = trigger
        if run.commit_author:
            who = " · " + escape(run.commit_author)
        elif run.triggered_by_id and run.triggered_by:
            who = " · " + escape(run.triggered_by.get_username())
        else:
            who = ""
        if run.tag:
            ref = f'<span class="pill pill-tag">{escape(truncate(run.tag, 28))}</span>'
        elif run.branch:
            ref = (
                f'<a class="pill pill-branch" href="{repo_url}?branch='
                f'{escape(quote(run.branch))}" title="{escape(run.branch)}">'
                f"{escape(truncate(run.branch, 28))}</a>"
            )
        else:
            ref = ""
        sha = (
            f'<span class="pill pill-commit" title="{escape(run.commit_sha)}">'
            f"{escape(run.short_sha)}</span>"
            if run.commit_sha
            else ""
        )
        created_iso, created = self.when(run.created_at)
        return ROW.format(
            id=run.pk,
            status=escape(run.status),
            url=url,
            title=escape(run.commit_title or "(no commit message)"),
            repository=(
                f'<a href="{repo_url}"><strong>{escape(repository.name)}</strong></a>'
                "\n        "
            )
            if self.show_repository
            else "",
            number=run.number,
            trigger=trigger,
            who=who,
            ref=ref,
            sha=sha,
            duration=escape(getattr(run, "duration_text", "") or "—"),
            created_iso=created_iso,
            created=created,
        )


@register.simple_tag
def run_rows(runs: Iterable[Any], show_repository: bool = False) -> SafeString:
    """Render the ``<tr>`` of each run (runs come from ``queries.decorate``)."""
    row = _Row(bool(show_repository))
    return mark_safe(  # noqa: S308 - every value in a row is escaped.
        "".join(row.render(run) for run in runs)
    )


# One item of the overview's activity feed (static/js/dashboard.js adds new ones
# with the same markup as runs start and finish).
FEED_ITEM = """<li class="feed-item" data-run-id="{id}">
  <span class="dot status-{status}" data-status-for="run-{id}"></span>
  <div class="feed-body">
    <a href="{url}">{repository} #{number}</a> <span class="muted">{status}</span>
    <div class="truncate small" title="{title}">{summary}</div>
    <div class="feed-meta">{branch}<time data-relative datetime="{created_iso}">{created}</time></div>
  </div>
</li>
"""


@register.simple_tag
def activity_items(runs: Iterable[Any]) -> SafeString:
    """Render the activity feed's ``<li>`` of each run."""
    row = _Row(show_repository=True)
    items = []
    for run in runs:
        created_iso, created = row.when(run.created_at)
        title = run.commit_title
        items.append(
            FEED_ITEM.format(
                id=run.pk,
                status=escape(run.status),
                url=escape(row.run_url(run.pk)),
                repository=escape(run.repository.name),
                number=run.number,
                title=escape(title),
                summary=escape(title or run.ref),
                branch=f'<span class="pill pill-branch">{escape(truncate(run.branch, 24))}</span>'
                if run.branch
                else "",
                created_iso=created_iso,
                created=created,
            )
        )
    return mark_safe("".join(items))  # noqa: S308 - every value in an item is escaped.


# The buttons of a job, for developers: the JavaScript shows the one that fits the
# job's live status (data-visible-statuses) and hides the others.
JOB_ACTIONS = """<form method="post" action="{play}" class="sw-inline-form" data-visible-for="job-{id}" data-visible-statuses="manual"{play_hidden}>{csrf}<input type="hidden" name="next" value="{next}"><button class="btn btn-sm{primary}" type="submit" title="Start this manual job">▶ Run</button></form>
<form method="post" action="{cancel}" class="sw-inline-form" data-visible-for="job-{id}" data-visible-statuses="created pending running"{cancel_hidden} data-confirm="Cancel {name}?">{csrf}<input type="hidden" name="next" value="{next}"><button class="btn btn-sm btn-danger" type="submit">Cancel</button></form>
<form method="post" action="{retry}" class="sw-inline-form" data-visible-for="job-{id}" data-visible-statuses="failed canceled success"{retry_hidden}>{csrf}<button class="btn btn-sm" type="submit" title="Run this job again as a new attempt">↻ Retry</button></form>
"""

# One row of the run page's jobs table.
JOB_ROW = """<tr>
  <td class="nowrap"><span class="badge status-{status}" data-status-for="job-{id}">{status}</span></td>
  <td><a href="{url}">{name}</a>{allow_failure}{attempt}</td>
  <td class="muted">{stage}</td>
  <td class="small" style="max-width:320px">{why}</td>
  <td class="small mono muted truncate" style="max-width:160px" title="{worker_title}">{worker}</td>
  <td class="num" data-duration-for="job-{id}">{duration}</td>
  {actions}</tr>
"""

_HIDDEN = " hidden"


class _JobActions:
    """The action forms of jobs, sharing one request's token, path and URLs."""

    def __init__(self, context: template.Context) -> None:
        token = context.get("csrf_token")
        token = "" if not token or str(token) == "NOTPROVIDED" else str(token)
        self.csrf = (
            f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(token)}">'
            if token
            else ""
        )
        request = context.get("request")
        self.next = escape(request.get_full_path()) if request is not None else ""
        self.play = id_url("pipelines:job-play")
        self.cancel = id_url("pipelines:job-cancel")
        self.retry = id_url("pipelines:job-retry")

    def render(self, job: Any, big: bool = False) -> str:
        status = job.status
        return JOB_ACTIONS.format(
            id=job.pk,
            name=escape(job.name),
            csrf=self.csrf,
            next=self.next,
            play=escape(self.play(job.pk)),
            cancel=escape(self.cancel(job.pk)),
            retry=escape(self.retry(job.pk)),
            primary=" btn-primary" if big else "",
            play_hidden="" if status == "manual" else _HIDDEN,
            cancel_hidden=""
            if status in ("created", "pending", "running")
            else _HIDDEN,
            retry_hidden="" if status in ("failed", "canceled", "success") else _HIDDEN,
        )


@register.simple_tag(takes_context=True)
def job_actions(context: template.Context, job: Any, big: bool = False) -> SafeString:
    """Render a job's run / cancel / retry forms for users who may trigger."""
    if not context.get("can_trigger"):
        return mark_safe("")
    return mark_safe(_JobActions(context).render(job, big))  # noqa: S308 - escaped.


def _job_why(job: Any) -> str:
    """Return the "why / result" cell: failure and exit code, the wait reason."""
    if job.status == "failed":
        reason = escape(job.failure_reason[:1].upper() + job.failure_reason[1:])
        exit_code = f" · exit code {job.exit_code}" if job.exit_code is not None else ""
        return f'<span style="color:var(--c-failed)">{reason or "Failed"}{exit_code}</span>'
    if job.reason:
        return f'<span class="muted">{escape(job.reason)}</span>'
    if job.status == "success" and job.exit_code is not None:
        return f'<span class="muted">exit code {job.exit_code}</span>'
    return ""


@register.simple_tag(takes_context=True)
def job_rows(context: template.Context, jobs: Iterable[Any]) -> SafeString:
    """Render the ``<tr>`` of each job of the run page (jobs from ``decorate``)."""
    actions = _JobActions(context) if context.get("can_trigger") else None
    job_url = id_url("pipelines:job-detail")
    rows = []
    for job in jobs:
        rows.append(
            JOB_ROW.format(
                id=job.pk,
                status=escape(job.status),
                url=escape(job_url(job.pk)),
                name=escape(job.name),
                allow_failure=' <span class="badge" title="This job may fail without '
                'failing the run">allow failure</span>'
                if job.allow_failure
                else "",
                attempt=f' <span class="small muted">attempt {job.attempt}</span>'
                if job.attempt > 1
                else "",
                stage=escape(job.stage.name),
                why=_job_why(job),
                worker_title=escape(job.worker),
                worker=escape(job.worker or ""),
                duration=escape(getattr(job, "duration_text", "") or "—"),
                actions=f'<td class="actions">{actions.render(job)}</td>\n'
                if actions
                else "",
            )
        )
    return mark_safe("".join(rows))  # noqa: S308 - every value in a row is escaped.


# The trends card: the HTML of the last figures rendered, per process. Figures are
# cached for a minute (queries.trends), so most overview requests reuse the HTML.
_trends_lock = Lock()
_trends_html: tuple[list[Any], str] | None = None


@register.simple_tag
def trends_card(trends: list[Any]) -> SafeString:
    """Render ``partials/trends_card.html`` for TRENDS, reusing it while they hold."""
    global _trends_html
    last = _trends_html
    if last is not None and last[0] == trends:
        return mark_safe(last[1])  # noqa: S308 - rendered by the template engine.
    html = get_template("pipelines/partials/trends_card.html").render(
        {"trends": trends}
    )
    with _trends_lock:
        _trends_html = (list(trends), html)
    return mark_safe(html)  # noqa: S308 - rendered by the template engine.
