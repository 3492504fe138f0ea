from django.contrib import admin

from .models import (
    Artifact,
    Job,
    LogChunk,
    Repository,
    Run,
    Schedule,
    Stage,
    Variable,
    WebhookDelivery,
)


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "forge",
        "clone_url",
        "default_branch",
        "concurrency_limit",
        "created_at",
    )
    list_filter = ("forge",)
    search_fields = ("name", "clone_url")
    exclude = ("https_token", "ssh_private_key", "webhook_secret")


class StageInline(admin.TabularInline):
    model = Stage
    extra = 0
    readonly_fields = ("name", "index", "status")
    can_delete = False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "repository",
        "number",
        "status",
        "trigger",
        "branch",
        "short_sha",
        "created_at",
    )
    list_filter = ("status", "trigger", "repository")
    search_fields = ("commit_sha", "branch", "commit_message", "repository__name")
    list_select_related = ("repository",)
    date_hierarchy = "created_at"
    inlines = [StageInline]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "run",
        "status",
        "worker",
        "exit_code",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "executor", "queue")
    search_fields = ("name", "run__repository__name")
    list_select_related = ("run", "run__repository")
    raw_id_fields = ("run", "stage", "approved_by")


@admin.register(LogChunk)
class LogChunkAdmin(admin.ModelAdmin):
    list_display = ("job", "first_line", "last_line")
    raw_id_fields = ("job",)


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("name", "job", "size", "file_count", "created_at", "expires_at")
    raw_id_fields = ("job",)


@admin.register(Variable)
class VariableAdmin(admin.ModelAdmin):
    list_display = ("name", "repository", "is_secret", "updated_at")
    list_filter = ("is_secret", "repository")
    search_fields = ("name",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "forge",
        "repository",
        "event",
        "delivery_id",
        "outcome",
        "status_code",
        "duration_ms",
        "received_at",
    )
    list_filter = ("outcome", "forge", "event")
    search_fields = ("delivery_id", "reason")
    raw_id_fields = ("run", "redelivery_of")


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = (
        "description",
        "repository",
        "cron",
        "branch",
        "enabled",
        "next_run_at",
    )
    list_filter = ("enabled",)
