"""The websocket routes, named by settings.WEBSOCKET_URLCONF (read by chatsite/asgi.py)."""

from __future__ import annotations

from django.urls import path

from llm import tokens
from realtime.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
]

# The web process imports these routes as it starts. Its sockets' turns count each
# question's tokens (the prompt estimate): the vocabulary (about 1.5 s of CPU) loads now,
# not in the first turn while a person waits.
tokens.get_encoding()
