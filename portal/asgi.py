"""ASGI entry point: HTTP through Django, websockets through Channels (login required)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

import portal.kernel.converters  # noqa: E402, F401  (registers the <id:...> path converter)
from portal.shell.console_consumer import ConsoleConsumer  # noqa: E402
from portal.shell.consumers import LiveConsumer  # noqa: E402

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi(), name="ws-live"),
    path("ws/console/<id:pk>/", ConsoleConsumer.as_asgi(), name="ws-console"),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
