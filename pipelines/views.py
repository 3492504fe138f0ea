"""Pipeline pages: overview, repositories, runs, jobs, badges.

Views parse input, check the role, call one service and render a page (or, for an
htmx request, a partial). Every page issues a bounded number of queries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
)

from core import audit, roles

from . import access, badges, queries
from .forms import (
    RepositoryForm,
    ScheduleForm,
    TriggerForm,
    VariableForm,
    format_variables,
)
from .models import (
    Artifact,
    Job,
    Repository,
    Run,
    Schedule,
    Stage,
    Variable,
    WebhookDelivery,
    generate_webhook_secret,
)

FORGES = [
    ("github", "GitHub"),
    ("gitlab", "GitLab"),
    ("gitea", "Gitea"),
    ("forgejo", "Forgejo"),
    ("generic", "Generic"),
]


# ---------------------------------------------------------------- helpers


# Who may do what is decided by core.roles (global roles and per-repository grants);
# the resolvers in .access name the repository a page is about.
role_required = roles.role_required
viewer_required = role_required(roles.VIEWER)  # A global viewer (not only a grant).


def flash(request: HttpRequest, level: int, text: str) -> None:
    """Add a flash message whose tags carry the level name (the CSS keys on it)."""
    tag = messages.DEFAULT_TAGS.get(level, "info")
    messages.add_message(request, level, text, extra_tags=tag)


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def back(request: HttpRequest, default: str) -> HttpResponse:
    """Redirect to the ``next`` field when it is a local path, else to DEFAULT."""
    target = request.POST.get("next", "")
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target)
    return redirect(default)


def _services() -> Any:
    # Imported lazily: the services module is written in parallel with the pages.
    from . import services

    return services


def _action_error() -> type[Exception]:
    return getattr(_services(), "ActionError", RuntimeError)


def _current_jobs(jobs: Any) -> Any:
    """Drop the attempts that a retry replaced (when the model tracks them)."""
    try:
        Job._meta.get_field("retried")
    except Exception:  # The field is not there yet.
        return jobs
    return jobs.filter(retried=False)


def _status_choices() -> list[tuple[str, str]]:
    return [(value, label.capitalize()) for value, label in Run.Status.choices]


def _trigger_choices() -> list[tuple[str, str]]:
    return [
        (value, label.replace("_", " ").capitalize())
        for value, label in Run.Trigger.choices
    ]


def _run_page_context(
    request: HttpRequest, runs: Any, *, base_url: str
) -> dict[str, Any]:
    filters = queries.RunFilters.from_query(request.GET)
    page = queries.keyset_page(filters.apply(runs), request.GET)
    query = filters.as_query()
    return {
        "page": page,
        "runs": queries.decorate(page.rows),
        "filters": filters,
        "base_url": base_url,
        "older_url": f"{base_url}?{urlencode({**query, 'before': page.before})}"
        if page.before
        else "",
        "newer_url": f"{base_url}?{urlencode({**query, 'after': page.after})}"
        if page.after
        else "",
        "first_url": f"{base_url}?{urlencode(query)}" if not page.first else "",
        "status_choices": _status_choices(),
        "trigger_choices": _trigger_choices(),
    }


# ---------------------------------------------------------------- overview


@require_GET
@role_required(roles.VIEWER, roles.ANY)
def overview(request: HttpRequest) -> HttpResponse:
    """Show runs in progress, recent runs, trends, workers, clusters and activity."""
    if not roles.has_role(request.user, roles.VIEWER):
        return _granted_overview(request)  # Only what this user's grants show.
    partial = request.GET.get("partial", "")
    if partial == "active":
        return render(
            request,
            "pipelines/partials/active_runs.html",
            {"active_runs": queries.active_runs()},
        )
    if partial == "recent":
        return render(
            request,
            "pipelines/partials/recent_runs.html",
            {"recent_runs": queries.recent_runs()},
        )
    recent = queries.recent_runs()
    # A run needs a repository: only an install without runs asks for one.
    has_repositories = bool(recent) or Repository.objects.exists()
    overall, trends = queries.trends() if recent else (None, [])
    active = queries.active_runs() if recent else []
    workers = queries.workers_online()
    context = {
        "has_repositories": has_repositories,
        "active_runs": active,
        "active_more": len(active) >= queries.ACTIVE_LIMIT,
        "recent_runs": recent,
        "overall": overall,
        "trends": trends,
        "queue_depth": queries.queue_depth(),
        "workers": workers,
        "clusters": queries.clusters_health(),
        "activity": recent[:10],
        "overview_config": {
            "activitySocket": "/ws/activity/",
            "activeUrl": reverse("pipelines:overview") + "?partial=active",
            "recentUrl": reverse("pipelines:overview") + "?partial=recent",
        },
    }
    return render(request, "pipelines/overview.html", context)


def _granted_overview(request: HttpRequest) -> HttpResponse:
    """Show the overview of a user without a global role: their grants only.

    Runs come from the granted repositories, clusters from the granted clusters; the
    trends (which sum over every repository) are left out.
    """
    from clusters.models import Cluster

    runs = roles.visible(request.user, queries.runs_queryset())
    partial = request.GET.get("partial", "")
    active = queries.decorate(
        runs.filter(status__in=queries.ACTIVE_RUN_STATUSES)[: queries.ACTIVE_LIMIT]
    )
    if partial == "active":
        return render(
            request, "pipelines/partials/active_runs.html", {"active_runs": active}
        )
    recent = queries.decorate(runs[:12])
    if partial == "recent":
        return render(
            request, "pipelines/partials/recent_runs.html", {"recent_runs": recent}
        )
    clusters = queries.clusters_health(limit=1000)
    if clusters is not None:
        names = set(
            roles.visible(request.user, Cluster.objects.all()).values_list(
                "name", flat=True
            )
        )
        clusters = [c for c in clusters if c.name in names][:12]
    context = {
        "has_repositories": roles.visible(
            request.user, Repository.objects.all()
        ).exists(),
        "active_runs": active,
        "active_more": len(active) >= queries.ACTIVE_LIMIT,
        "recent_runs": recent,
        "overall": None,
        "trends": [],
        "queue_depth": queries.queue_depth(),
        "workers": queries.workers_online(),
        "clusters": clusters,
        "activity": recent[:10],
        "overview_config": {
            "activitySocket": "/ws/activity/",
            "activeUrl": reverse("pipelines:overview") + "?partial=active",
            "recentUrl": reverse("pipelines:overview") + "?partial=recent",
        },
    }
    return render(request, "pipelines/overview.html", context)


# ---------------------------------------------------------------- repositories


@require_GET
@role_required(roles.VIEWER, roles.ANY)
def worker_list(request: HttpRequest) -> HttpResponse:
    """List the workers online with their queues, executors and current load."""
    return render(
        request, "pipelines/worker_list.html", {"workers": queries.worker_rows()}
    )


@require_GET
@role_required(roles.VIEWER, roles.ANY)
def repository_list(request: HttpRequest) -> HttpResponse:
    """List repositories with their newest run and branch count."""
    return render(
        request,
        "pipelines/repository_list.html",
        {
            "repositories": roles.filter_visible(
                request.user, queries.repositories_with_last_run(), roles.REPOSITORY
            )
        },
    )


@require_http_methods(["GET", "POST"])
@role_required(roles.ADMIN)
def repository_create(request: HttpRequest) -> HttpResponse:
    """Connect a repository (admins)."""
    form = RepositoryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            repository = form.save()
            audit.record(
                "repository.create",
                target=repository,
                request=request,
                details={"clone_url": repository.clone_url},
            )
        flash(
            request,
            messages.SUCCESS,
            f"{repository.name} is connected. Set up the webhook so pushes start runs.",
        )
        return redirect("pipelines:repository-webhooks", name=repository.name)
    return render(
        request,
        "pipelines/repository_form.html",
        {"form": form, "repository": None},
        status=400 if form.is_bound else 200,
    )


def _repository(name: str) -> Repository:
    return get_object_or_404(Repository, name=name)


def _repository_context(
    request: HttpRequest,
    repository: Repository,
    tab: str,
    head_run: Run | None = None,
) -> dict[str, Any]:
    """Return what every tab's header shows; HEAD_RUN when the caller has it."""
    badge_path = reverse("pipelines:badge", args=[repository.name])
    badge_url = request.build_absolute_uri(badge_path)
    branch_badge = f"{badge_url}?branch={repository.default_branch}"
    page_url = request.build_absolute_uri(repository.get_absolute_url())
    return {
        "repository": repository,
        "tab": tab,
        "head_run": head_run or queries.last_run(repository, repository.default_branch),
        "badge_path": f"{badge_path}?{urlencode({'branch': repository.default_branch})}",
        "badge_markdown": f"[![pipeline]({branch_badge})]({page_url})",
        "can_admin": roles.has_role(request.user, roles.ADMIN, repository),
    }


@require_GET
@role_required(roles.VIEWER, access.by_name)
def repository_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Show a repository's runs (filter by branch, status and trigger)."""
    repository = _repository(name)
    base_url = repository.get_absolute_url()
    context = _run_page_context(
        request,
        queries.runs_queryset().filter(repository=repository),
        base_url=base_url,
    )
    context["show_repository"] = False
    if is_htmx(request):
        return render(request, "pipelines/partials/run_table.html", context)
    head_run = None
    if context["page"].first and not context["filters"].active:
        # The newest runs are on this page: the default branch's newest is often
        # among them, which saves the header its own query.
        branch = repository.default_branch
        head_run = next((r for r in context["runs"] if r.branch == branch), None)
    context.update(_repository_context(request, repository, "runs", head_run))
    return render(request, "pipelines/repository_detail.html", context)


@require_GET
@role_required(roles.VIEWER, access.by_name)
def repository_branches(request: HttpRequest, name: str) -> HttpResponse:
    """List a repository's branches with the status of their newest run."""
    repository = _repository(name)
    context = _repository_context(request, repository, "branches")
    context["branches"] = queries.branches(repository)
    return render(request, "pipelines/repository_branches.html", context)


@require_GET
@role_required(roles.VIEWER, access.by_name)
def repository_webhooks(request: HttpRequest, name: str) -> HttpResponse:
    """Show how to point each forge's webhook at Slipway."""
    repository = _repository(name)
    context = _repository_context(request, repository, "webhooks")
    forge = request.GET.get("forge", repository.forge)
    if forge not in dict(FORGES):
        forge = repository.forge
    hook_urls = {
        key: request.build_absolute_uri(f"/hooks/{key}/{repository.name}/")
        for key, _ in FORGES
    }
    context.update(
        {
            "forges": FORGES,
            "forge": forge,
            "hook_url": hook_urls[forge],
            "secret": repository.webhook_secret if context["can_admin"] else "",
            "recent_deliveries": list(
                repository.deliveries.only(
                    "id",
                    "repository_id",
                    "event",
                    "outcome",
                    "reason",
                    "received_at",
                    "status_code",
                )[:5]
            ),
        }
    )
    return render(request, "pipelines/repository_webhooks.html", context)


@require_POST
@role_required(roles.ADMIN, access.by_name)
def repository_rotate_secret(request: HttpRequest, name: str) -> HttpResponse:
    """Replace the webhook secret (the forge must be updated afterwards)."""
    repository = _repository(name)
    with transaction.atomic():
        repository.webhook_secret = generate_webhook_secret()
        repository.save(update_fields=["webhook_secret"])
        audit.record(
            "repository.rotate_webhook_secret", target=repository, request=request
        )
    flash(
        request,
        messages.WARNING,
        "A new webhook secret is active. Paste it into the forge's webhook settings: "
        "deliveries signed with the old one are now rejected.",
    )
    return redirect("pipelines:repository-webhooks", name=repository.name)


@require_GET
@role_required(roles.VIEWER, access.by_name)
def repository_deliveries(request: HttpRequest, name: str) -> HttpResponse:
    """List the webhook deliveries received for a repository, newest first."""
    repository = _repository(name)
    base_url = reverse("pipelines:repository-deliveries", args=[repository.name])
    deliveries = repository.deliveries.select_related("run").order_by("-id")
    outcome = request.GET.get("outcome", "")
    if outcome in WebhookDelivery.Outcome.values:
        deliveries = deliveries.filter(outcome=outcome)
    else:
        outcome = ""
    page = queries.keyset_page(deliveries, request.GET)
    query = {"outcome": outcome} if outcome else {}
    context = {
        "page": page,
        "deliveries": page.rows,
        "outcome": outcome,
        "outcomes": WebhookDelivery.Outcome.choices,
        "older_url": f"{base_url}?{urlencode({**query, 'before': page.before})}"
        if page.before
        else "",
        "newer_url": f"{base_url}?{urlencode({**query, 'after': page.after})}"
        if page.after
        else "",
        "base_url": base_url,
    }
    if is_htmx(request):
        context["repository"] = repository
        return render(request, "pipelines/partials/delivery_table.html", context)
    context.update(_repository_context(request, repository, "deliveries"))
    return render(request, "pipelines/repository_deliveries.html", context)


@require_POST
@role_required(roles.DEVELOPER, access.by_name)
def delivery_redeliver(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    """Process a stored webhook delivery again (a run starts at most once)."""
    repository = _repository(name)
    delivery = get_object_or_404(WebhookDelivery, pk=pk, repository=repository)
    services = _services()
    try:
        run = services.redeliver(delivery, user=request.user, request=request)
    except _action_error() as exc:
        flash(request, messages.ERROR, str(exc))
    else:
        if isinstance(run, Run):
            flash(request, messages.SUCCESS, f"Redelivered: run #{run.number} started.")
        else:
            flash(
                request,
                messages.INFO,
                "Redelivered: no run started (see the newest delivery for why).",
            )
    return back(
        request, reverse("pipelines:repository-deliveries", args=[repository.name])
    )


def _tab_add_form(
    request: HttpRequest,
    context: dict[str, Any],
    form_class: type[Any],
    *,
    noun: str,
    event: str,
    details: Callable[[Any], dict[str, Any]],
    message: Callable[[Any], str],
) -> tuple[Any, HttpResponse | None]:
    """Handle the add form of a repository tab that admins manage (schedules, variables).

    Return (form, None) to render the tab: the form for admins (bound and invalid
    after a POST), None for others. After a valid POST the row is saved and audited,
    and (form, redirect back to the tab) is returned. Others posting get a 403.
    """
    repository = context["repository"]
    if not context["can_admin"]:
        if request.method == "POST":
            raise PermissionDenied(f"Only admins manage {noun}.")
        return None, None
    form = form_class(request.POST or None, repository=repository)
    if request.method != "POST" or not form.is_valid():
        return form, None
    with transaction.atomic():
        saved = form.save()
        audit.record(event, target=saved, request=request, details=details(saved))
    flash(request, messages.SUCCESS, message(saved))
    return form, redirect(
        f"pipelines:repository-{context['tab']}", name=repository.name
    )


@require_http_methods(["GET", "POST"])
@role_required(roles.VIEWER, access.by_name)
def repository_schedules(request: HttpRequest, name: str) -> HttpResponse:
    """List a repository's schedules; admins add new ones."""
    repository = _repository(name)
    context = _repository_context(request, repository, "schedules")
    form, done = _tab_add_form(
        request,
        context,
        ScheduleForm,
        noun="schedules",
        event="schedule.create",
        details=lambda schedule: {"cron": schedule.cron, "branch": schedule.branch},
        message=lambda schedule: f"Schedule “{schedule}” added.",
    )
    if done is not None:
        return done
    context["form"] = form
    context["schedules"] = list(
        repository.schedules.select_related("last_run").order_by("description")
    )
    return render(
        request,
        "pipelines/repository_schedules.html",
        context,
        status=400 if request.method == "POST" else 200,
    )


@require_POST
@role_required(roles.ADMIN, access.by_name)
def schedule_delete(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    """Delete a schedule."""
    repository = _repository(name)
    schedule = get_object_or_404(Schedule, pk=pk, repository=repository)
    with transaction.atomic():
        audit.record("schedule.delete", target=schedule, request=request)
        schedule.delete()
    flash(request, messages.SUCCESS, f"Schedule “{schedule.description}” deleted.")
    return redirect("pipelines:repository-schedules", name=repository.name)


@require_POST
@role_required(roles.ADMIN, access.by_name)
def schedule_toggle(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    """Pause or resume a schedule."""
    from .schedules import compute_next

    repository = _repository(name)
    schedule = get_object_or_404(Schedule, pk=pk, repository=repository)
    schedule.enabled = not schedule.enabled
    schedule.next_run_at = compute_next(schedule) if schedule.enabled else None
    with transaction.atomic():
        schedule.save(update_fields=["enabled", "next_run_at"])
        audit.record(
            "schedule.resume" if schedule.enabled else "schedule.pause",
            target=schedule,
            request=request,
        )
    flash(
        request,
        messages.SUCCESS,
        f"Schedule “{schedule}” {'resumed' if schedule.enabled else 'paused'}.",
    )
    return redirect("pipelines:repository-schedules", name=repository.name)


@require_http_methods(["GET", "POST"])
@role_required(roles.VIEWER, access.by_name)
def repository_variables(request: HttpRequest, name: str) -> HttpResponse:
    """List a repository's variables and secrets; admins add and delete them."""
    repository = _repository(name)
    context = _repository_context(request, repository, "variables")
    form, done = _tab_add_form(
        request,
        context,
        VariableForm,
        noun="variables",
        event="variable.create",
        details=lambda variable: {"secret": variable.is_secret},
        message=lambda variable: (
            f"{'Secret' if variable.is_secret else 'Variable'} {variable.name} added."
        ),
    )
    if done is not None:
        return done
    context["form"] = form
    context["variables"] = list(repository.variables.order_by("name"))
    context["global_variables"] = list(
        Variable.objects.filter(repository=None).only("name", "is_secret", "updated_at")
    )
    return render(
        request,
        "pipelines/repository_variables.html",
        context,
        status=400 if request.method == "POST" else 200,
    )


@require_POST
@role_required(roles.ADMIN, access.by_name)
def variable_delete(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    """Delete a variable or secret."""
    repository = _repository(name)
    variable = get_object_or_404(Variable, pk=pk, repository=repository)
    with transaction.atomic():
        audit.record("variable.delete", target=variable, request=request)
        variable.delete()
    flash(request, messages.SUCCESS, f"{variable.name} deleted.")
    return redirect("pipelines:repository-variables", name=repository.name)


@require_http_methods(["GET", "POST"])
@role_required(roles.ADMIN, access.by_name)
def repository_settings(request: HttpRequest, name: str) -> HttpResponse:
    """Edit a repository (admins); credentials are write-only."""
    repository = _repository(name)
    old_name = repository.name
    form = RepositoryForm(request.POST or None, instance=repository)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            changed = [f for f in form.changed_data if not f.startswith("clear_")]
            repository = form.save()
            audit.record(
                "repository.update",
                target=repository,
                request=request,
                details={"fields": sorted(changed)},
            )
        flash(request, messages.SUCCESS, "Settings saved.")
        return redirect("pipelines:repository-settings", name=repository.name)
    if form.is_bound:
        # Keep the page's links pointing at the stored name while errors show.
        repository.name = old_name
    context = _repository_context(request, repository, "settings")
    context["form"] = form
    return render(
        request,
        "pipelines/repository_form.html",
        context,
        status=400 if form.is_bound else 200,
    )


@require_POST
@role_required(roles.ADMIN, access.by_name)
def repository_delete(request: HttpRequest, name: str) -> HttpResponse:
    """Delete a repository with its runs, logs and artifacts."""
    repository = _repository(name)
    if request.POST.get("confirm_name", "") != repository.name:
        flash(
            request,
            messages.ERROR,
            "Type the repository's name to confirm the deletion.",
        )
        return redirect("pipelines:repository-settings", name=repository.name)
    with transaction.atomic():
        audit.record("repository.delete", target=repository, request=request)
        repository.delete()
    flash(request, messages.SUCCESS, f"{name} deleted.")
    return redirect("pipelines:repository-list")


@require_http_methods(["GET", "POST"])
@role_required(roles.DEVELOPER, access.by_name)
def repository_trigger(request: HttpRequest, name: str) -> HttpResponse:
    """Start a run of a branch, tag or commit by hand."""
    repository = _repository(name)
    initial = {"ref": request.GET.get("ref") or repository.default_branch}
    form = TriggerForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            services = _services()
            ref = form.cleaned_data["ref"]
            try:
                run = services.trigger_run(
                    repository,
                    trigger="manual",
                    ref=ref,
                    variables=form.cleaned_data["variables"] or None,
                    user=request.user,
                    request=request,
                )
            except _action_error() as exc:
                form.add_error(None, str(exc))
            else:
                flash(request, messages.SUCCESS, f"Run #{run.number} of {ref} started.")
                return redirect(run.get_absolute_url())
    context = _repository_context(request, repository, "trigger")
    context["form"] = form
    return render(request, "pipelines/repository_trigger.html", context, status=status)


# ---------------------------------------------------------------- runs


@require_GET
@role_required(roles.VIEWER, roles.ANY)
def run_list(request: HttpRequest) -> HttpResponse:
    """List the runs of every repository (filters, keyset pagination)."""
    context = _run_page_context(
        request,
        roles.visible(request.user, queries.runs_queryset()),
        base_url=reverse("pipelines:run-list"),
    )
    context["show_repository"] = True
    if is_htmx(request):
        return render(request, "pipelines/partials/run_table.html", context)
    context["repository_names"] = list(
        roles.visible(request.user, Repository.objects.order_by("name")).values_list(
            "name", flat=True
        )[:500]
    )
    return render(request, "pipelines/run_list.html", context)


def _job_summary(jobs: list[Job]) -> list[tuple[str, int]]:
    """Return (status, count) pairs in a reading order, for the run header."""
    order = [
        "success",
        "failed",
        "running",
        "pending",
        "manual",
        "created",
        "canceled",
        "skipped",
    ]
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    return [(status, counts[status]) for status in order if status in counts]


def _load_run(pk: int) -> tuple[Run, list[Stage], list[Job]]:
    run = get_object_or_404(
        Run.objects.select_related("repository", "triggered_by"), pk=pk
    )
    stages = list(run.stages.order_by("index"))
    jobs = list(
        _current_jobs(run.jobs.all())
        .select_related("stage")
        .defer("spec")
        .order_by("stage__index", "id")
    )
    return run, stages, jobs


@require_GET
@role_required(roles.VIEWER, access.by_run)
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a run: header, pipeline graph, jobs, artifacts; live."""
    run, stages, jobs = _load_run(pk)
    queries.decorate([run, *jobs])
    graph = queries.run_graph(run, jobs, stages)
    if request.GET.get("format") == "json":
        return JsonResponse(graph)
    if request.GET.get("partial") == "jobs":
        return render(
            request,
            "pipelines/partials/run_jobs.html",
            {"run": run, "jobs": queries.decorate(jobs), "stages": stages},
        )
    artifacts = list(
        Artifact.objects.filter(job__run=run)
        .select_related("job")
        .order_by("job__stage__index", "job_id", "name")
    )
    context = {
        "run": run,
        "stages": stages,
        "jobs": jobs,
        "graph": graph,
        "artifacts": artifacts,
        "failed_jobs": sum(1 for j in jobs if j.status in ("failed", "canceled")),
        "job_summary": _job_summary(jobs),
        "error_lines": run.error.splitlines() if run.error else [],
        "variables": format_variables(run.variables),
        "more_message": run.commit_message.strip() != run.commit_title,
        "run_config": {
            "runId": run.pk,
            "socket": f"/ws/runs/{run.pk}/",
            "graphUrl": f"{run.get_absolute_url()}?format=json",
            "jobsUrl": f"{run.get_absolute_url()}?partial=jobs",
        },
    }
    return render(request, "pipelines/run_detail.html", context)


def _run_action(request: HttpRequest, pk: int, verb: str, done: str) -> HttpResponse:
    run = get_object_or_404(Run.objects.select_related("repository"), pk=pk)
    services = _services()
    try:
        result = getattr(services, verb)(run, user=request.user, request=request)
    except _action_error() as exc:
        flash(request, messages.ERROR, str(exc))
    else:
        if isinstance(result, list):
            done = done.format(n=len(result), s="" if len(result) == 1 else "s")
        flash(request, messages.SUCCESS, done)
    return back(request, run.get_absolute_url())


@require_POST
@role_required(roles.DEVELOPER, access.by_run)
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a run and its unfinished jobs."""
    return _run_action(request, pk, "cancel_run", "Run canceled.")


@require_POST
@role_required(roles.DEVELOPER, access.by_run)
def run_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Retry the failed and canceled jobs of a run."""
    return _run_action(request, pk, "retry_failed_jobs", "Retrying {n} job{s}.")


# ---------------------------------------------------------------- jobs


def _load_job(pk: int) -> Job:
    return get_object_or_404(
        Job.objects.select_related("run", "run__repository", "stage", "approved_by"),
        pk=pk,
    )


@require_GET
@role_required(roles.VIEWER, access.by_job)
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a job: header, why it waits, the live log, artifacts."""
    job = _load_job(pk)
    run = job.run
    queries.decorate([job, run])
    # One query for both lists: the sidebar shows the current attempt of each job,
    # the details every attempt of this one.
    jobs = list(
        run.jobs.select_related("stage")
        .defer("spec", "needs")
        .order_by("stage__index", "id")
    )
    siblings = [j for j in jobs if not j.retried]
    attempts = sorted(
        (j for j in jobs if j.stage_id == job.stage_id and j.name == job.name),
        key=lambda j: j.attempt,
    )
    artifacts = list(job.artifacts.order_by("name"))
    context = {
        "job": job,
        "run": run,
        "siblings": siblings,
        "attempts": attempts if len(attempts) > 1 else [],
        "artifacts": artifacts,
        "raw_url": reverse("pipelines:job-log-raw", args=[job.pk]),
        "job_config": {
            "jobId": job.pk,
            "runId": run.pk,
            "status": job.status,
            "logSocket": f"/ws/jobs/{job.pk}/log/",
            "rawUrl": reverse("pipelines:job-log-raw", args=[job.pk]),
            "runSocket": f"/ws/runs/{run.pk}/",
        },
    }
    return render(request, "pipelines/job_detail.html", context)


@require_GET
@role_required(roles.VIEWER, access.by_job)
def job_log_raw(request: HttpRequest, pk: int) -> HttpResponse:
    """Stream a job's whole log as plain text."""
    job = _load_job(pk)
    from . import logs

    def batches() -> Iterator[str]:
        # Join lines into ~64 KiB pieces: fewer writes, and fewer thread hops below.
        buffer: list[str] = []
        size = 0
        for line in logs.iter_raw(job):
            line = line if line.endswith("\n") else line + "\n"
            buffer.append(line)
            size += len(line)
            if size >= 65536:
                yield "".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield "".join(buffer)

    content: Any = batches()
    if isinstance(request, ASGIRequest):
        # Under ASGI a sync iterator would be read whole into memory first; hand the
        # server an async one that pulls each piece from the database thread.
        pieces = content
        pull = sync_to_async(lambda: next(pieces, None), thread_sensitive=True)

        async def stream() -> AsyncIterator[str]:
            while (piece := await pull()) is not None:
                yield piece

        content = stream()
    response = StreamingHttpResponse(content, content_type="text/plain; charset=utf-8")
    filename = f"{job.run.repository.name}-{job.run.number}-{job.name}.log"
    filename = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)
    disposition = "attachment" if request.GET.get("download") else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


def _job_action(request: HttpRequest, pk: int, verb: str, done: str) -> HttpResponse:
    job = _load_job(pk)
    services = _services()
    try:
        result = getattr(services, verb)(job, user=request.user, request=request)
    except _action_error() as exc:
        flash(request, messages.ERROR, str(exc))
        return back(request, job.get_absolute_url())
    flash(request, messages.SUCCESS, done.format(job=job.name))
    if isinstance(result, Job) and result.pk != job.pk:
        return redirect(result.get_absolute_url())
    return back(request, job.get_absolute_url())


@require_POST
@role_required(roles.DEVELOPER, access.by_job)
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Run a finished job again as a new attempt."""
    return _job_action(request, pk, "retry_job", "Retrying {job}.")


@require_POST
@role_required(roles.DEVELOPER, access.by_job)
def job_play(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a manual job."""
    return _job_action(request, pk, "play_job", "Started {job}.")


@require_POST
@role_required(roles.DEVELOPER, access.by_job)
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a pending or running job."""
    return _job_action(request, pk, "cancel_job", "Canceling {job}.")


@require_GET
@role_required(roles.VIEWER, access.by_artifact)
def artifact_download(request: HttpRequest, pk: int) -> HttpResponse:
    """Stream an artifact archive."""
    artifact = get_object_or_404(Artifact.objects.select_related("job"), pk=pk)
    if not artifact.file:
        raise Http404("This artifact has no file.")
    try:
        handle = artifact.file.open("rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404("The artifact's file is gone (expired or removed).") from exc
    suffix = artifact.file.name.rsplit("/", 1)[-1]
    ext = suffix[suffix.find(".") :] if "." in suffix else ""
    filename = artifact.name if artifact.name.endswith(ext) else artifact.name + ext
    return FileResponse(handle, as_attachment=True, filename=filename)


# ---------------------------------------------------------------- badge


@login_not_required
@require_GET
def badge(request: HttpRequest, name: str) -> HttpResponse:
    """Return a shields-style SVG of the newest run's status (public)."""
    branch = request.GET.get("branch", "").strip()[:255] or None
    repository = Repository.objects.filter(name=name).only("id").first()
    run = queries.last_finished_run(repository, branch) if repository else None
    svg = badges.render(
        request.GET.get("label", "pipeline")[:40] or "pipeline",
        badges.status_of(run.status if run else None),
    )
    response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
    response["Cache-Control"] = "no-cache, max-age=0, s-maxage=30"
    response["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'"
    )
    if repository is None:
        response.status_code = 404
    return response
