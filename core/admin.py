"""Admin of core: the audit log and tokens (read only) and role grants.

The whole admin site is for global admins (``_admin_site_permission``): a grant on
one repository or cluster never opens it, so what an admin page shows needs no
per-object rule. Grants are managed here; every change is audited.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from . import audit
from .models import ApiToken, AuditEvent, RoleGrant
from .roles import ADMIN, GRANT_TARGETS, has_role


def _target_types() -> Q:
    query = Q(pk__in=[])
    for label in GRANT_TARGETS:
        app_label, model = label.split(".")
        query |= Q(app_label=app_label, model=model)
    return query


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "actor_name",
        "action",
        "target_repr",
        "source",
        "ip_address",
    )
    list_filter = ("source", "action")
    search_fields = ("actor_name", "action", "target_repr", "target_id")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created by their owner in the UI; the admin can only look."""

    list_display = ("name", "user", "prefix", "scope", "created_at", "expires_at")
    list_filter = ("scope",)
    search_fields = ("name", "user__username", "prefix")
    fields = readonly_fields = [
        f.name for f in ApiToken._meta.fields if f.name not in ("id", "key_hash")
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RoleGrantForm(forms.ModelForm):
    """Pick a user or a group, a role, and a repository or cluster by type and id."""

    class Meta:
        model = RoleGrant
        fields = ["user", "group", "role", "content_type", "object_id"]
        labels = {"content_type": "Object type", "object_id": "Object id"}
        help_texts = {
            "object_id": "The id of the repository or cluster (in its admin page URL).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["content_type"].queryset = ContentType.objects.filter(
            _target_types()
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError("Choose a user or a group (one of them).")
        kind, pk = data.get("content_type"), data.get("object_id")
        if kind is not None and pk is not None:
            model = kind.model_class()
            if model is None or not model._default_manager.filter(pk=pk).exists():
                self.add_error("object_id", f"There is no {kind.model} with id {pk}.")
        return data


@admin.register(RoleGrant)
class RoleGrantAdmin(admin.ModelAdmin):
    """Grants: a role on one repository or cluster for a user or a group."""

    form = RoleGrantForm
    list_display = ("holder", "role", "target", "created_at")
    list_filter = ("role", "content_type")
    search_fields = ("user__username", "group__name", "object_id")
    list_select_related = ("user", "group", "content_type")

    @admin.display(description="user or group")
    def holder(self, obj: RoleGrant) -> str:
        return str(obj.user) if obj.user_id else f"group {obj.group}"

    @admin.display(description="on")
    def target(self, obj: RoleGrant) -> str:
        return obj.target_label

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoleGrant]:
        return (
            super()
            .get_queryset(request)
            .filter(content_type__in=ContentType.objects.filter(_target_types()))
        )

    def save_model(
        self, request: HttpRequest, obj: RoleGrant, form: Any, change: bool
    ) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit.record(
                "grant.update" if change else "grant.create",
                target=obj,
                request=request,
                source=AuditEvent.Source.ADMIN,
                details=_grant_details(obj),
            )

    def delete_model(self, request: HttpRequest, obj: RoleGrant) -> None:
        with transaction.atomic():
            audit.record(
                "grant.delete",
                target=obj,
                request=request,
                source=AuditEvent.Source.ADMIN,
                details=_grant_details(obj),
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


def _grant_details(grant: RoleGrant) -> dict[str, Any]:
    return {
        "user": grant.user.get_username() if grant.user_id else None,
        "group": grant.group.name if grant.group_id else None,
        "role": grant.role,
        "object": f"{grant.content_type.app_label}.{grant.content_type.model}",
        "object_id": grant.object_id,
    }


def _admin_site_permission(request) -> bool:
    # The same role rule as pages, API and sockets: staff status alone is not enough.
    return admin.AdminSite.has_permission(admin.site, request) and has_role(
        request.user, ADMIN
    )


admin.site.has_permission = _admin_site_permission
