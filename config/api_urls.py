"""The REST API: /api/v1/ (DRF), the OpenAPI schema and its docs page.

Included from config/urls.py under ``api/``. Every route needs an authenticated
user with a role (session or ``Authorization: Bearer slp_...``); see docs/api.md.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from clusters.api import ClusterViewSet
from core import api as core_api
from core.api_views import AuditEventViewSet
from pipelines import api as pipelines_api


class Router(DefaultRouter):
    include_root_view = False
    include_format_suffixes = False


router = Router(trailing_slash=True)
router.register("repositories", pipelines_api.RepositoryViewSet, "repository")
router.register("runs", pipelines_api.RunViewSet, "run")
router.register("jobs", pipelines_api.JobViewSet, "job")
router.register("artifacts", pipelines_api.ArtifactViewSet, "artifact")
router.register("deliveries", pipelines_api.DeliveryViewSet, "delivery")
router.register("schedules", pipelines_api.ScheduleViewSet, "schedule")
router.register("variables", pipelines_api.VariableViewSet, "variable")
router.register("environments", pipelines_api.EnvironmentViewSet, "environment")
router.register("deployments", pipelines_api.DeploymentViewSet, "deployment")
router.register("clusters", ClusterViewSet, "cluster")
router.register("audit", AuditEventViewSet, "audit")


class SchemaView(core_api.AuditSourceMixin, SpectacularAPIView):
    """The OpenAPI 3 schema (viewers and up)."""

    permission_classes = core_api.DEFAULT_PERMISSIONS


class DocsView(core_api.AuditSourceMixin, SpectacularSwaggerSplitView):
    """Swagger UI from vendored assets; its init script is a separate request (CSP)."""

    permission_classes = core_api.DEFAULT_PERMISSIONS
    url_name = "api:schema"

    def handle_exception(self, exc: Exception) -> Response:
        # A browser without a session goes to the login page, not to a JSON error.
        if isinstance(exc, exceptions.NotAuthenticated) and (
            self.request.GET.get("script") is None
        ):
            return redirect_to_login(self.request.get_full_path())  # type: ignore[return-value]
        return super().handle_exception(exc)


def _not_found(request: Any, *args: Any, **kwargs: Any) -> Any:
    return core_api.not_found(request)


_not_found.login_required = False  # type: ignore[attr-defined]

app_name = "api"
urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(), name="docs"),
    path("v1/lint/", pipelines_api.LintView.as_view(), name="lint"),
    path("v1/", include(router.urls)),
    re_path(r"^.*$", _not_found, name="not-found"),
]
