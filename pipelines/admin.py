"""Django admin for the pipeline models: columns, filters, search and actions.

Actions go through the services (the one write path, which also audits); adds,
changes and deletes are audited by the base (``core.admin.AuditedModelAdmin``).
Credentials and secret values are never displayed.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from core.admin import AuditedModelAdmin

from .models import (
    Artifact,
    Deployment,
    Environment,
    Job,
    LogChunk,
    Repository,
    Run,
    RunCounter,
    Schedule,
    Stage,
    Variable,
    WebhookDelivery,
)


def _services() -> Any:
    from . import services

    return services


def _apply(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    rows: QuerySet[Any],
    verb: str,
    done: str,
) -> None:
    """Call services.VERB on each row; report successes and refusals."""
    services = _services()
    refused = getattr(services, "ActionError", RuntimeError)
    ok, errors = 0, []
    for row in rows:
        try:
            getattr(services, verb)(row, user=request.user, request=request)
        except refused as exc:
            errors.append(f"{row}: {exc}")
        else:
            ok += 1
    if ok:
        modeladmin.message_user(request, f"{done}: {ok}.", messages.SUCCESS)
    for error in errors[:10]:
        modeladmin.message_user(request, error, messages.WARNING)


def status_badge(status: str) -> str:
    colours = {
        "success": "#1a7f37",
        "failed": "#cf222e",
        "running": "#0969da",
        "pending": "#9a6700",
        "manual": "#8250df",
    }
    return format_html(
        '<b style="color:{}">{}</b>', colours.get(status, "#57606a"), status
    )


@admin.register(Repository)
class RepositoryAdmin(AuditedModelAdmin):
    list_display = (
        "name",
        "forge",
        "clone_url",
        "default_branch",
        "has_token",
        "has_ssh_key",
        "concurrency_limit",
        "poll_interval",
        "created_at",
    )
    list_filter = ("forge", "cancel_superseded")
    search_fields = ("name", "clone_url", "description", "forge_project")
    # Credentials are write-only: edit them on the repository's settings page.
    exclude = ("https_token", "ssh_private_key", "webhook_secret")
    readonly_fields = ("last_polled_at", "created_at")

    @admin.display(boolean=True, description="token")
    def has_token(self, obj: Repository) -> bool:
        return bool(obj.https_token)

    @admin.display(boolean=True, description="SSH key")
    def has_ssh_key(self, obj: Repository) -> bool:
        return bool(obj.ssh_private_key)


class StageInline(admin.TabularInline):
    model = Stage
    extra = 0
    readonly_fields = ("name", "index", "status")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(AuditedModelAdmin):
    list_display = (
        "id",
        "repository",
        "number",
        "colored_status",
        "trigger",
        "branch",
        "short_sha",
        "commit_author",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "trigger", "repository", "created_at")
    search_fields = (
        "=id",
        "commit_sha",
        "branch",
        "tag",
        "commit_message",
        "commit_author",
        "repository__name",
    )
    list_select_related = ("repository",)
    date_hierarchy = "created_at"
    raw_id_fields = ("triggered_by",)
    readonly_fields = ("created_at", "started_at", "finished_at")
    inlines = [StageInline]
    actions = ["cancel_runs", "retry_failed_jobs"]
    # A big table: no full COUNT(*) for the paginator's "x of y".
    show_full_result_count = False

    @admin.display(description="status", ordering="status")
    def colored_status(self, obj: Run) -> str:
        return status_badge(obj.status)

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, "cancel_run", "Runs canceled")

    @admin.action(description="Retry the failed jobs of the selected runs")
    def retry_failed_jobs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, "retry_failed_jobs", "Runs retried")


@admin.register(Job)
class JobAdmin(AuditedModelAdmin):
    list_display = (
        "id",
        "name",
        "run",
        "colored_status",
        "attempt",
        "worker",
        "exit_code",
        "reason",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "executor", "queue", "allow_failure")
    search_fields = ("=id", "name", "worker", "run__repository__name")
    list_select_related = ("run", "run__repository")
    raw_id_fields = ("run", "stage", "approved_by")
    show_full_result_count = False
    actions = ["cancel_jobs", "retry_jobs"]

    @admin.display(description="status", ordering="status")
    def colored_status(self, obj: Job) -> str:
        return status_badge(obj.status)

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _apply(self, request, queryset, "cancel_job", "Jobs canceled")

    @admin.action(description="Retry the selected jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _apply(self, request, queryset, "retry_job", "Jobs retried")


@admin.register(LogChunk)
class LogChunkAdmin(AuditedModelAdmin):
    list_display = ("id", "job", "first_line", "last_line")
    raw_id_fields = ("job",)
    search_fields = ("=job__id",)
    show_full_result_count = False


@admin.register(Artifact)
class ArtifactAdmin(AuditedModelAdmin):
    list_display = ("name", "job", "size", "file_count", "created_at", "expires_at")
    list_filter = ("created_at", "expires_at")
    search_fields = ("name", "job__name", "job__run__repository__name")
    list_select_related = ("job",)
    raw_id_fields = ("job",)


class VariableAdminForm(forms.ModelForm):
    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: leave empty to keep the stored value.",
    )

    class Meta:
        model = Variable
        fields = ["repository", "name", "value", "is_secret"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Compare with nothing, not the stored value: the field counts as changed
        # (and is audited as such) only when a new value is typed.
        self.initial["value"] = ""


@admin.register(Variable)
class VariableAdmin(AuditedModelAdmin):
    form = VariableAdminForm
    list_display = ("name", "repository", "is_secret", "shown_value", "updated_at")
    list_filter = ("is_secret", "repository")
    search_fields = ("name", "repository__name")
    list_select_related = ("repository",)

    @admin.display(description="value")
    def shown_value(self, obj: Variable) -> str:
        return "••••••••" if obj.is_secret else obj.value[:60]

    def save_model(
        self, request: HttpRequest, obj: Variable, form: Any, change: bool
    ) -> None:
        if change and not form.cleaned_data.get("value"):
            # Left empty: keep the stored value.
            obj.value = Variable.objects.get(pk=obj.pk).value
        super().save_model(request, obj, form, change)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AuditedModelAdmin):
    list_display = (
        "id",
        "forge",
        "repository",
        "event",
        "delivery_id",
        "outcome",
        "reason",
        "status_code",
        "duration_ms",
        "received_at",
    )
    list_filter = ("outcome", "forge", "event", "repository")
    search_fields = ("delivery_id", "reason", "repository__name")
    list_select_related = ("repository",)
    raw_id_fields = ("run", "redelivery_of")
    date_hierarchy = "received_at"
    show_full_result_count = False
    actions = ["redeliver"]

    @admin.action(description="Redeliver the selected webhooks")
    def redeliver(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]
    ) -> None:
        _apply(self, request, queryset, "redeliver", "Deliveries redelivered")


@admin.register(Schedule)
class ScheduleAdmin(AuditedModelAdmin):
    list_display = (
        "description",
        "repository",
        "cron",
        "branch",
        "enabled",
        "next_run_at",
        "last_run",
    )
    list_filter = ("enabled", "repository")
    search_fields = ("description", "branch", "repository__name")
    list_select_related = ("repository", "last_run")
    raw_id_fields = ("last_run",)
    actions = ["enable", "disable"]

    @admin.action(description="Enable the selected schedules")
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Pause the selected schedules")
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[Schedule], enabled: bool
    ) -> None:
        from croniter import croniter
        from django.utils import timezone

        from core import audit

        for schedule in queryset:
            schedule.enabled = enabled
            schedule.next_run_at = (
                croniter(schedule.cron, timezone.now()).get_next(timezone.datetime)
                if enabled
                else None
            )
            schedule.save(update_fields=["enabled", "next_run_at"])
            audit.record(
                "schedule.resume" if enabled else "schedule.pause",
                target=schedule,
                request=request,
                source="admin",
            )
        self.message_user(request, f"{queryset.count()} schedules updated.")


class ReadOnlyAdmin(AuditedModelAdmin):
    """Rows the engine owns: shown, searched and filtered, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Stage)
class StageAdmin(ReadOnlyAdmin):
    list_display = ("name", "run", "index", "colored_status")
    list_filter = ("status",)
    search_fields = ("name", "=run__id", "run__repository__name")
    list_select_related = ("run", "run__repository")
    show_full_result_count = False

    @admin.display(description="status", ordering="status")
    def colored_status(self, obj: Stage) -> str:
        return status_badge(obj.status)


@admin.register(RunCounter)
class RunCounterAdmin(ReadOnlyAdmin):
    list_display = ("repository", "last_number")
    search_fields = ("repository__name",)
    list_select_related = ("repository",)


@admin.register(Environment)
class EnvironmentAdmin(AuditedModelAdmin):
    list_display = (
        "name",
        "repository",
        "cluster",
        "namespace",
        "protected",
        "deploy_role",
        "deploy_group",
        "created_at",
    )
    list_filter = ("protected", "deploy_role", "repository", "cluster")
    search_fields = ("name", "namespace", "repository__name", "cluster__name")
    list_select_related = ("repository", "cluster", "deploy_group")
    actions = ["roll_back"]

    @admin.action(description="Roll back to the previous successful deployment")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        from . import delivery

        ok = 0
        for environment in queryset.select_related("repository"):
            try:
                delivery.rollback(environment, user=request.user, request=request)
            except delivery.DeliveryError as exc:
                self.message_user(request, f"{environment}: {exc}", messages.WARNING)
            else:
                ok += 1
        if ok:
            self.message_user(request, f"Rollbacks queued: {ok}.", messages.SUCCESS)


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "environment",
        "kind",
        "colored_status",
        "short_sha",
        "trigger",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "kind", "environment__repository", "created_at")
    search_fields = ("=id", "commit_sha", "ref", "trigger", "environment__name")
    list_select_related = ("environment", "environment__repository")
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="status", ordering="status")
    def colored_status(self, obj: Deployment) -> str:
        return status_badge(obj.status)
