"""The one boundary between sync code (Celery threads) and the channel layer.

Every frame sent from a worker goes through :func:`publish`. Calling
``async_to_sync(group_send)`` per frame would build an event loop and a Redis
connection per call (channels_redis#125); instead one long-lived loop per process
runs every publish, and each caller waits for its own so frames stay in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any

from channels.layers import get_channel_layer

from conversations.replay import get_replay_store

logger = logging.getLogger(__name__)

EVENT_TYPE = "stream.frame"
REPLAYED_FRAMES = {"delta", "done", "error"}

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def message_group(message_id: int) -> str:
    return f"message.{message_id}"


def use_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Publish on an existing loop (embedded mode: the web server's own loop, which the
    in-memory channel layer lives on)."""
    global _loop
    with _loop_lock:
        _loop = loop


def _publish_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="realtime-publisher", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def publish(message_id: int, frame: dict[str, Any], *, wait: bool = True) -> None:
    """Send one server→client frame to every socket following this message.

    Deltas and terminal frames are also kept in the replay buffer first, so a tab that
    subscribes a moment later can still read them.
    """
    if frame["type"] in REPLAYED_FRAMES:
        get_replay_store().append(message_id, frame)
    layer = get_channel_layer()
    if layer is None:
        return
    future: Future[None] = asyncio.run_coroutine_threadsafe(
        layer.group_send(message_group(message_id), {"type": EVENT_TYPE, "frame": frame}),
        _publish_loop(),
    )
    if wait:
        try:
            future.result(timeout=10)
        except Exception:
            # The frame is in the replay buffer; a client that missed it resumes from there.
            logger.warning("publish to message %s failed", message_id, exc_info=True)
