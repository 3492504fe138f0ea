from django.urls import path

from . import views

app_name = "pipelines"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("repos/", views.repository_list, name="repository-list"),
    path("repos/<str:name>/", views.repository_detail, name="repository-detail"),
    path("runs/", views.run_list, name="run-list"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
]
