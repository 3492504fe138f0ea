"""Pages of core: personal API tokens and the audit log."""

from django.urls import path

from . import views_audit, views_tokens

app_name = "core"
urlpatterns = [
    path("settings/tokens/", views_tokens.token_list, name="token-list"),
    path(
        "settings/tokens/<int:pk>/revoke/",
        views_tokens.token_revoke,
        name="token-revoke",
    ),
    path("audit/", views_audit.audit_list, name="audit-list"),
]
