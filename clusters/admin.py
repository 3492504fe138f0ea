"""Admin for clusters: list columns, filters, search and a "Test connection" action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import audit
from core.admin import AuditedModelAdmin

from . import services
from .models import Cluster


@admin.register(Cluster)
class ClusterAdmin(AuditedModelAdmin):
    list_display = (
        "name",
        "api_server",
        "auth_mode",
        "reachable",
        "server_version",
        "last_seen_at",
        "monitored",
        "created_at",
    )
    list_filter = ("auth_mode", "reachable", "monitored", "verify_tls")
    search_fields = ("name", "description", "api_server", "server_version")
    readonly_fields = (
        "created_at",
        "last_seen_at",
        "reachable",
        "server_version",
        "last_error",
    )
    actions = ["test_connection"]

    @admin.action(description="Test connection")
    def test_connection(
        self, request: HttpRequest, queryset: QuerySet[Cluster]
    ) -> None:
        for cluster in queryset:
            result = services.test_connection(cluster)
            audit.record(
                "cluster.test_connection",
                request=request,
                target=cluster,
                source="admin",
                details={"ok": result.ok, "error": result.error},
            )
            if result.ok:
                self.message_user(
                    request, f"{cluster}: reachable, {result.version}", messages.SUCCESS
                )
            else:
                self.message_user(request, f"{cluster}: {result.error}", messages.ERROR)
