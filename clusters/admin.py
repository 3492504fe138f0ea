"""Admin for clusters: list columns, filters, search and a "Test connection" action."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import audit
from core.admin import AuditedModelAdmin

from . import services
from .models import Cluster

WRITE_ONLY = ("kubeconfig", "token")


class ClusterAdminForm(forms.ModelForm):
    """The cluster form with write-only credentials: never rendered back."""

    kubeconfig = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "autocomplete": "off"}),
        help_text="Write-only: paste a new kubeconfig, or leave empty to keep it.",
    )
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: a new service-account token, or empty to keep it.",
    )

    class Meta:
        model = Cluster
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in WRITE_ONLY:
            # The stored value never travels to the browser: empty means unchanged.
            self.initial[name] = ""


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
    form = ClusterAdminForm
    readonly_fields = (
        "created_at",
        "last_seen_at",
        "reachable",
        "server_version",
        "last_error",
        "has_kubeconfig",
        "has_token",
    )
    actions = ["test_connection"]

    @admin.display(boolean=True, description="kubeconfig stored")
    def has_kubeconfig(self, obj: Cluster) -> bool:
        return bool(obj.kubeconfig)

    @admin.display(boolean=True, description="token stored")
    def has_token(self, obj: Cluster) -> bool:
        return bool(obj.token)

    def save_model(
        self, request: HttpRequest, obj: Cluster, form: Any, change: bool
    ) -> None:
        if change:
            stored = Cluster.objects.filter(pk=obj.pk).values(*WRITE_ONLY).first()
            for name in WRITE_ONLY:
                if not form.cleaned_data.get(name) and stored:
                    setattr(obj, name, stored[name])  # Left empty: keep it.
        super().save_model(request, obj, form, change)

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
