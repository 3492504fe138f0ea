"""Environment pages: where each repository deploys, what runs there, its history.

Views parse input, check the role, call one service in `pipelines.delivery` and
render. Buttons show only to users who may use them; the services check again, so a
POST by anyone else is a 403.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core import audit, roles

from . import access, delivery
from .environment_forms import EnvironmentForm, PromoteForm
from .models import Deployment, Environment, Job, Repository

HISTORY_LIMIT = 50


def _flash(request: HttpRequest, level: int, text: str) -> None:
    tag = messages.DEFAULT_TAGS.get(level, "info")
    messages.add_message(request, level, text, extra_tags=tag)


def _environment(name: str, env: str) -> Environment:
    return get_object_or_404(
        Environment.objects.select_related("repository", "cluster", "deploy_group"),
        repository__name=name,
        name=env,
    )


@require_GET
@roles.role_required(roles.VIEWER, roles.ANY)
def environment_list(request: HttpRequest) -> HttpResponse:
    """List every environment (of the repositories the user sees) and its version."""
    rows = delivery.environment_rows(
        roles.visible(
            request.user,
            Environment.objects.order_by("repository__name", "name"),
            "repository",
        )
    )
    return render(
        request,
        "pipelines/environment_list.html",
        {"rows": rows, "repository": None, "form": None},
    )


@require_http_methods(["GET", "POST"])
@roles.role_required(roles.VIEWER, access.by_name)
def repository_environments(request: HttpRequest, name: str) -> HttpResponse:
    """List a repository's environments; its admins add new ones here."""
    repository = get_object_or_404(Repository, name=name)
    is_admin = roles.has_role(request.user, roles.ADMIN, repository)
    form = None
    if is_admin:
        form = EnvironmentForm(request.POST or None, repository=repository)
    if request.method == "POST":
        if form is None:
            raise PermissionDenied("Only admins add environments.")
        if form.is_valid():
            with transaction.atomic():
                environment = form.save()
                audit.record(
                    "environment.create",
                    target=environment,
                    request=request,
                    details={
                        "cluster": environment.cluster_id,
                        "namespace": environment.namespace,
                        "protected": environment.protected,
                    },
                )
            _flash(request, messages.SUCCESS, f"Environment {environment.name} added.")
            return redirect(environment.get_absolute_url())
    rows = delivery.environment_rows(repository.environments.order_by("name"))
    return render(
        request,
        "pipelines/environment_list.html",
        {"rows": rows, "repository": repository, "form": form},
        status=400 if form is not None and form.is_bound else 200,
    )


@require_GET
@roles.role_required(roles.VIEWER, access.by_name)
def environment_detail(request: HttpRequest, name: str, env: str) -> HttpResponse:
    """Show what runs in an environment, its history and the deploy actions."""
    environment = _environment(name, env)
    history = list(
        environment.deployments.select_related("user", "run", "source").order_by(
            "-created_at", "-pk"
        )[:HISTORY_LIMIT]
    )
    current = (
        next((d for d in history if d.status == Deployment.Status.SUCCESS), None)
        or environment.current_deployment()
    )
    can_deploy = delivery.may_deploy(request.user, environment)
    running = any(d.status == Deployment.Status.RUNNING for d in history)
    restorable = (Deployment.Status.SUCCESS, Deployment.Status.ROLLED_BACK)
    newest = next((d for d in history if d.status != Deployment.Status.RUNNING), None)
    # After a failed rollout the cluster may be half-way to the new version: the
    # current (last good) deployment is offered too, to re-apply what should run.
    failed = newest is not None and newest.status == Deployment.Status.FAILED
    reapply = current if failed and current is not None and current.manifests else None
    rollback_ids = {
        d.pk
        for d in history
        if can_deploy
        and not running
        and d.manifests
        and d.status in restorable
        and (current is None or d.pk != current.pk or reapply is not None)
    }
    others = list(
        environment.repository.environments.exclude(pk=environment.pk).order_by("name")
    )
    promote_form = (
        PromoteForm(choices=[(e.name, e.name) for e in others])
        if can_deploy and others
        else None
    )
    waiting = list(
        Job.objects.filter(
            run__repository=environment.repository,
            status=Job.Status.MANUAL,
            retried=False,
            spec__environment__name=environment.name,
        )
        .exclude(spec__deploy=None)
        .select_related("run")
        .order_by("-pk")[:20]
    )
    return render(
        request,
        "pipelines/environment_detail.html",
        {
            "environment": environment,
            "repository": environment.repository,
            "current": current,
            "history": history,
            "can_deploy": can_deploy,
            "can_admin": roles.has_role(
                request.user, roles.ADMIN, environment.repository
            ),
            "running": running,
            "rollback_ids": rollback_ids,
            "failed": newest if failed else None,
            "reapply": reapply if can_deploy and not running else None,
            "promote_form": promote_form,
            "waiting": waiting,
        },
    )


@require_http_methods(["GET", "POST"])
@roles.role_required(roles.ADMIN, access.by_name)
def environment_edit(request: HttpRequest, name: str, env: str) -> HttpResponse:
    """Edit an environment's cluster, namespace and protection (admins)."""
    environment = _environment(name, env)
    old_name = environment.name
    form = EnvironmentForm(
        request.POST or None, instance=environment, repository=environment.repository
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            changed = sorted(form.changed_data)
            environment = form.save()
            audit.record(
                "environment.update",
                target=environment,
                request=request,
                details={"fields": changed},
            )
        _flash(request, messages.SUCCESS, "Environment saved.")
        return redirect(environment.get_absolute_url())
    environment.name = old_name
    return render(
        request,
        "pipelines/environment_form.html",
        {
            "environment": environment,
            "repository": environment.repository,
            "form": form,
        },
        status=400 if form.is_bound else 200,
    )


@require_GET
@roles.role_required(roles.VIEWER, access.by_name)
def deployment_detail(
    request: HttpRequest, name: str, env: str, pk: int
) -> HttpResponse:
    """Show one deployment: who, what, its rendered manifests and its log."""
    environment = _environment(name, env)
    deployment = get_object_or_404(
        environment.deployments.select_related("user", "run", "job", "source"), pk=pk
    )
    return render(
        request,
        "pipelines/environment_deployment.html",
        {
            "environment": environment,
            "repository": environment.repository,
            "deployment": deployment,
            "can_deploy": delivery.may_deploy(request.user, environment),
        },
    )


@require_POST
@roles.role_required(roles.VIEWER, access.by_name)  # Then the deploy rule decides.
def environment_rollback(
    request: HttpRequest, name: str, env: str, pk: int
) -> HttpResponse:
    """Re-apply an earlier successful deployment (a rollback)."""
    environment = _environment(name, env)
    if not delivery.may_deploy(request.user, environment):
        raise PermissionDenied("You may not deploy to this environment.")
    target = get_object_or_404(environment.deployments, pk=pk)
    current = environment.current_deployment()
    reapplied = current is not None and current.pk == target.pk
    try:
        deployment = delivery.rollback(
            environment, to=target, user=request.user, request=request
        )
    except delivery.DeliveryError as exc:
        _flash(request, messages.ERROR, str(exc))
        return redirect(environment.get_absolute_url())
    shown = deployment.short_sha or "the earlier manifests"
    _flash(
        request,
        messages.SUCCESS,
        f"Re-applying {shown}, the last good version, to {environment.name}."
        if reapplied
        else f"Rolling back {environment.name} to {shown}.",
    )
    return redirect(environment.get_absolute_url())


@require_POST
@roles.role_required(roles.VIEWER, access.by_name)  # Then the deploy rule decides.
def environment_promote(request: HttpRequest, name: str, env: str) -> HttpResponse:
    """Deploy another environment's current version here."""
    environment = _environment(name, env)
    if not delivery.may_deploy(request.user, environment):
        raise PermissionDenied("You may not deploy to this environment.")
    others = environment.repository.environments.exclude(pk=environment.pk)
    form = PromoteForm(request.POST, choices=[(e.name, e.name) for e in others])
    if not form.is_valid():
        _flash(request, messages.ERROR, "Choose an environment to promote from.")
        return redirect(environment.get_absolute_url())
    source = others.get(name=form.cleaned_data["source"])
    try:
        deployment = delivery.promote(
            source, environment, user=request.user, request=request
        )
    except delivery.DeliveryError as exc:
        _flash(request, messages.ERROR, str(exc))
        return redirect(environment.get_absolute_url())
    _flash(
        request,
        messages.SUCCESS,
        f"Promoting {deployment.short_sha} from {source.name} to {environment.name}.",
    )
    return redirect(environment.get_absolute_url())
