"""The project's URLs plus /metrics, until config/urls.py routes it."""

from django.urls import path

from config.urls import handler403, handler404, handler500
from config.urls import urlpatterns as base
from core.metrics import metrics_view

__all__ = ["handler403", "handler404", "handler500", "urlpatterns"]

urlpatterns = [path("metrics", metrics_view, name="metrics"), *base]
