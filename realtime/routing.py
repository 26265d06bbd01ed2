"""The websocket routes, named by settings.WEBSOCKET_URLCONF (read by chatsite/asgi.py)."""

from __future__ import annotations

from django.urls import path

from realtime.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
]
