"""Admin of core: the audited admin base, the audit log, tokens and role grants.

The whole admin site is for global admins (``_admin_site_permission``): a grant on
one repository or cluster never opens it, so what an admin page shows needs no
per-object rule. Every write made through it is audited (``AuditedAdminMixin``),
and every admin view marks its request, so a service an admin action calls
records the source ``admin`` too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse

from . import audit
from .models import ApiToken, AuditEvent, RoleGrant
from .roles import ADMIN, GRANT_TARGETS, has_role


class AuditedAdminMixin:
    """Record every add, change and delete made through a model admin.

    Actions are ``<audit_name>.create``, ``.update`` and ``.delete`` (the name
    defaults to the model's), with source ``admin`` and the request's address.
    Details carry the names of the changed fields, never their values: a secret's
    value or a cluster's credentials must not reach the log. The record is written
    in the same transaction as the change, so a rolled-back save leaves none.
    """

    audit_name: str = ""

    def audit_action(self, verb: str) -> str:
        """Return the audit action of VERB (create, update, delete) on this model."""
        name = self.audit_name or self.model._meta.model_name  # type: ignore[attr-defined]
        return f"{name}.{verb}"

    def audit_details(self, obj: Any, fields: list[str] | None) -> dict[str, Any]:
        """Return the details recorded for OBJ: the changed field names, if any."""
        return {} if fields is None else {"fields": fields}

    def record_audit(
        self,
        request: HttpRequest,
        verb: str,
        obj: models.Model,
        fields: list[str] | None = None,
    ) -> None:
        audit.record(
            self.audit_action(verb),
            target=obj,
            request=request,
            source=AuditEvent.Source.ADMIN,
            details=self.audit_details(obj, fields),
        )

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any, change: bool
    ) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)  # type: ignore[misc]
            fields = sorted(form.changed_data) if form is not None else []
            self.record_audit(request, "update" if change else "create", obj, fields)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            # Before the delete: the row's id and name are still there to record.
            self.record_audit(request, "delete", obj)
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        # "Delete selected" deletes in bulk, past delete_model: one record per row.
        with transaction.atomic():
            for obj in queryset:
                self.record_audit(request, "delete", obj)
            super().delete_queryset(request, queryset)  # type: ignore[misc]


class AuditedModelAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """The model admin every Slipway model uses: see ``AuditedAdminMixin``."""


def _target_types() -> Q:
    query = Q(pk__in=[])
    for label in GRANT_TARGETS:
        app_label, model = label.split(".")
        query |= Q(app_label=app_label, model=model)
    return query


@admin.register(AuditEvent)
class AuditEventAdmin(AuditedModelAdmin):
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
class ApiTokenAdmin(AuditedModelAdmin):
    """Tokens are created by their owner in the UI; the admin can look and delete."""

    audit_name = "token"

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
class RoleGrantAdmin(AuditedModelAdmin):
    """Grants: a role on one repository or cluster for a user or a group."""

    form = RoleGrantForm
    audit_name = "grant"
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

    def audit_details(self, obj: Any, fields: list[str] | None) -> dict[str, Any]:
        # A grant has no secret: record whom it gives what, on which object.
        return {**super().audit_details(obj, fields), **_grant_details(obj)}


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


_admin_view = admin.site.admin_view


def _marked_admin_view(view: Callable[..., Any], cacheable: bool = False) -> Any:
    """Wrap an admin view so that what it records is audited as from the admin.

    Every model admin's URLs are built through ``admin_view``; a bulk action that
    calls a service passes the request on, and ``audit.record`` reads the mark.
    """

    @functools.wraps(view)
    def marked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        request.audit_source = AuditEvent.Source.ADMIN  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return _admin_view(marked, cacheable)


admin.site.admin_view = _marked_admin_view  # type: ignore[method-assign]


# Users and groups are how roles are given: changing them is audited like the rest.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    """Django's user admin, audited; a password change records no password."""

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        with transaction.atomic():
            response = super().user_change_password(request, id, form_url)
            # Success redirects to the user's page; a refusal re-renders the form
            # or redirects back to itself.
            if (
                request.method == "POST"
                and response.status_code == 302
                and response["Location"] != request.get_full_path()
            ):
                user = self.get_object(request, unquote(id))
                if user is not None:
                    self.record_audit(request, "password_change", user)
        return response


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    """Django's group admin (the global roles are groups), audited."""
