"""ASGI entry point: HTTP through Django, WebSockets through Channels (login required)."""

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402


class RequestsInFlight:
    """At most `limit` HTTP requests inside Django at once; the others wait here, in the event
    loop, for a free place (first come, first served).

    Django runs each request's view in a thread with its own database connection, so this is
    also the bound on the process's connections (settings.WEB_REQUESTS_IN_FLIGHT).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._places: asyncio.Semaphore | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._places is None:  # made on first use, inside the server's event loop
            self._places = asyncio.Semaphore(self.limit)
        async with self._places:
            await self.app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": RequestsInFlight(django_asgi_app, settings.WEB_REQUESTS_IN_FLIGHT),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
