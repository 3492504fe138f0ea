"""ASGI entry point: Django for HTTP, Channels for WebSockets with session auth."""

import os

from django.core.asgi import get_asgi_application

from config.env import check_settings, exit_on_setting_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# uvicorn imports this module: a bad setting stops it with one line, not a traceback.
check_settings()
# Build the Django app first: it sets up the app registry the routing imports need.
with exit_on_setting_error():
    django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from clusters.routing import websocket_urlpatterns as cluster_sockets  # noqa: E402
from pipelines.hook_views import HookApp  # noqa: E402
from pipelines.routing import websocket_urlpatterns as pipeline_sockets  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Webhook deliveries skip Django's per-request thread and middleware; every
        # other request (including GET /hooks/...) is Django's.
        "http": HookApp(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(pipeline_sockets + cluster_sockets))
        ),
    }
)
