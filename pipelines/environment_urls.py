"""URLs of the environment pages, included under /environments/."""

from django.urls import path

from . import environment_views as views

app_name = "environments"

urlpatterns = [
    path("", views.environment_list, name="list"),
    path("<str:name>/", views.repository_environments, name="repository"),
    path("<str:name>/<str:env>/", views.environment_detail, name="detail"),
    path("<str:name>/<str:env>/edit/", views.environment_edit, name="edit"),
    path(
        "<str:name>/<str:env>/deployments/<int:pk>/",
        views.deployment_detail,
        name="deployment",
    ),
    path(
        "<str:name>/<str:env>/deployments/<int:pk>/rollback/",
        views.environment_rollback,
        name="rollback",
    ),
    path("<str:name>/<str:env>/promote/", views.environment_promote, name="promote"),
]
