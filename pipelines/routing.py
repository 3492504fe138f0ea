"""WebSocket routes of the pipelines app."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", consumers.RunConsumer.as_asgi()),
    path("ws/activity/", consumers.ActivityConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/log/", consumers.LogConsumer.as_asgi()),
]
