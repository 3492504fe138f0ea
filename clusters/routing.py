"""WebSocket routes of the clusters app."""

websocket_urlpatterns: list = []
