from django.urls import path

from . import views

app_name = "clusters"
urlpatterns = [
    path("", views.cluster_list, name="cluster-list"),
    path("add/", views.cluster_create, name="cluster-add"),
    path("<int:pk>/", views.cluster_detail, name="cluster-detail"),
    path("<int:pk>/edit/", views.cluster_edit, name="cluster-edit"),
    path("<int:pk>/delete/", views.cluster_delete, name="cluster-delete"),
    path("<int:pk>/test/", views.cluster_test, name="cluster-test"),
    path("<int:pk>/nodes/", views.node_list, name="nodes"),
    path("<int:pk>/pods/", views.pod_list, name="pods"),
    path("<int:pk>/workloads/", views.workload_list, name="workloads"),
    path("<int:pk>/services/", views.service_list, name="services"),
    path("<int:pk>/storage/", views.storage_list, name="storage"),
    path("<int:pk>/autoscaling/", views.hpa_list, name="hpas"),
    path("<int:pk>/events/", views.event_list, name="events"),
    path("<int:pk>/apply/", views.apply_yaml, name="apply"),
    path(
        "<int:pk>/pods/<str:namespace>/<str:name>/logs/",
        views.pod_logs,
        name="pod-logs",
    ),
    path(
        "<int:pk>/pods/<str:namespace>/<str:name>/logs.txt",
        views.pod_log_text,
        name="pod-log-text",
    ),
    path(
        "<int:pk>/yaml/<str:kind>/<str:namespace>/<str:name>/",
        views.object_yaml,
        name="object-yaml",
    ),
    path("<int:pk>/actions/<slug:action>/", views.cluster_action, name="action"),
]
