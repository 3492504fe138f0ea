"""Top-level URL configuration."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.decorators.http import require_http_methods

from core import views as core_views
from core.metrics import metrics_view
from pipelines import hook_views

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path(
        "login/",
        # A FormView takes PUT as POST, and a signed-in user is redirected before
        # any method check: refuse other verbs first.
        require_http_methods(["GET", "POST"])(
            auth_views.LoginView.as_view(redirect_authenticated_user=True)
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("hooks/<str:forge>/<str:name>/", hook_views.receive, name="webhook"),
    path("api/", include("config.api_urls")),
    path("", include("core.urls")),
    path("", include("pipelines.urls")),
    path("clusters/", include("clusters.urls")),
    path("environments/", include("pipelines.environment_urls")),
]

handler403 = "core.views.permission_denied"
handler404 = "core.views.page_not_found"
handler500 = "core.views.server_error"
