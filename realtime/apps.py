from __future__ import annotations

import asyncio
from typing import Any

from django.apps import AppConfig

from chatsite.signals import embedded_loop_started
from realtime.publishing import use_event_loop


def _publish_on_embedded_loop(sender: Any, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
    use_event_loop(loop)


class RealtimeConfig(AppConfig):
    """Websocket consumers, frames, publishing, replay and backpressure."""

    name = "realtime"

    def ready(self) -> None:
        # Embedded mode: frames go out on the web server's loop, where the in-memory
        # channel layer lives (announced by runstack --serve).
        embedded_loop_started.connect(_publish_on_embedded_loop,
                                      dispatch_uid="realtime.publish_on_embedded_loop")
