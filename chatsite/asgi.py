from __future__ import annotations

import os
from collections.abc import MutableMapping
from importlib import import_module
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi = get_asgi_application()  # before importing anything that touches models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from chatsite.logs import RequestIds  # noqa: E402
from chatsite.origins import websocket_origin_guard  # noqa: E402

NOSNIFF = (b"x-content-type-options", b"nosniff")


class StaticThenDjango:
    """Serves collected static files directly; everything else goes to Django.

    Static responses say ``X-Content-Type-Options: nosniff`` as Django's pages do
    (SecurityMiddleware), so a browser never runs a file as a type it was not served as."""

    def __init__(self, app, static_root: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.prefix = prefix
        self.static = StaticFiles(directory=static_root, check_dir=False)

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            scoped = dict(scope, root_path=scope.get("root_path", "") + self.prefix.rstrip("/"))

            async def send_nosniff(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    headers = [(k, v) for k, v in message.get("headers", [])
                               if k.lower() != b"x-content-type-options"]
                    message = {**message, "headers": [*headers, NOSNIFF]}
                await send(message)

            try:
                await self.static(scoped, receive, send_nosniff)
            except HTTPException as exc:
                # Outside a Starlette app nothing turns this into a response (uvicorn would
                # answer 500): a missing file is a plain 404.
                response = PlainTextResponse(exc.detail, status_code=exc.status_code)
                await response(scoped, receive, send_nosniff)
            return
        await self.app(scope, receive, send)


# Every log line of a request or a websocket carries its request_id (chatsite/logs.py).
application = RequestIds(ProtocolTypeRouter(
    {
        "http": StaticThenDjango(django_asgi, str(settings.STATIC_ROOT), settings.STATIC_URL),
        # Same origin only (scheme, host and port), refused before the socket is accepted.
        # The routes come from WEBSOCKET_URLCONF, as Django's HTTP ones from ROOT_URLCONF.
        "websocket": websocket_origin_guard(AuthMiddlewareStack(URLRouter(
            import_module(settings.WEBSOCKET_URLCONF).websocket_urlpatterns
        ))),
    }
))
