"""WebSocket routes of the clusters app."""

from django.urls import path

from . import consumers

websocket_urlpatterns: list = [
    path("ws/clusters/<int:cluster_id>/", consumers.ClusterConsumer.as_asgi()),
]
