from django.contrib import admin

from .models import ApiToken, AuditEvent
from .roles import ADMIN, has_role


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


def _admin_site_permission(request) -> bool:
    # The same role rule as pages, API and sockets: staff status alone is not enough.
    return admin.AdminSite.has_permission(admin.site, request) and has_role(
        request.user, ADMIN
    )


admin.site.has_permission = _admin_site_permission
