from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi = get_asgi_application()  # before importing anything that touches models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from conversations.consumers import ChatConsumer  # noqa: E402


class StaticThenDjango:
    """Serves collected static files directly; everything else goes to Django."""

    def __init__(self, app, static_root: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.prefix = prefix
        self.static = StaticFiles(directory=static_root, check_dir=False)

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            scoped = dict(scope, root_path=scope.get("root_path", "") + self.prefix.rstrip("/"))
            await self.static(scoped, receive, send)
            return
        await self.app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": StaticThenDjango(django_asgi, str(settings.STATIC_ROOT), settings.STATIC_URL),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/chat/", ChatConsumer.as_asgi())]))
        ),
    }
)
