from django.urls import path

from . import views

app_name = "pipelines"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("repos/", views.repository_list, name="repository-list"),
    path("repos/new/", views.repository_create, name="repository-create"),
    path("repos/<str:name>/", views.repository_detail, name="repository-detail"),
    path(
        "repos/<str:name>/branches/",
        views.repository_branches,
        name="repository-branches",
    ),
    path(
        "repos/<str:name>/webhooks/",
        views.repository_webhooks,
        name="repository-webhooks",
    ),
    path(
        "repos/<str:name>/webhooks/rotate/",
        views.repository_rotate_secret,
        name="repository-rotate-secret",
    ),
    path(
        "repos/<str:name>/deliveries/",
        views.repository_deliveries,
        name="repository-deliveries",
    ),
    path(
        "repos/<str:name>/deliveries/<int:pk>/redeliver/",
        views.delivery_redeliver,
        name="delivery-redeliver",
    ),
    path(
        "repos/<str:name>/schedules/",
        views.repository_schedules,
        name="repository-schedules",
    ),
    path(
        "repos/<str:name>/schedules/<int:pk>/delete/",
        views.schedule_delete,
        name="schedule-delete",
    ),
    path(
        "repos/<str:name>/schedules/<int:pk>/toggle/",
        views.schedule_toggle,
        name="schedule-toggle",
    ),
    path(
        "repos/<str:name>/variables/",
        views.repository_variables,
        name="repository-variables",
    ),
    path(
        "repos/<str:name>/variables/<int:pk>/delete/",
        views.variable_delete,
        name="variable-delete",
    ),
    path(
        "repos/<str:name>/settings/",
        views.repository_settings,
        name="repository-settings",
    ),
    path("repos/<str:name>/delete/", views.repository_delete, name="repository-delete"),
    path("repos/<str:name>/run/", views.repository_trigger, name="repository-trigger"),
    path("runs/", views.run_list, name="run-list"),
    path("workers/", views.worker_list, name="worker-list"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/retry/", views.run_retry, name="run-retry"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/log.txt", views.job_log_raw, name="job-log-raw"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job-retry"),
    path("jobs/<int:pk>/play/", views.job_play, name="job-play"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path(
        "artifacts/<int:pk>/download/",
        views.artifact_download,
        name="artifact-download",
    ),
    path("badge/<str:name>.svg", views.badge, name="badge"),
]
