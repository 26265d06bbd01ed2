"""How an answer's coroutine reaches the world outside its event loop (answers.engine)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connection

T = TypeVar("T")
# Runs a database call off the event loop and returns its result.
Db = Callable[[Callable[[], T]], Awaitable[T]]


@dataclass
class Runtime:
    """``db`` runs a database call off the loop, ``send`` publishes a frame without
    blocking (None: ``realtime.publishing.publish``), and ``sent`` waits until every
    frame published so far has gone out (before the final frame, which the ending's own
    transaction publishes)."""

    db: Db[Any]
    send: Callable[[int, dict[str, Any]], None] | None
    sent: Callable[[], Awaitable[None]]


def release_db() -> None:
    """A live answer holds no database connection between writes: 200 concurrent answers
    share a small pool instead of needing 200 connections."""
    if not connection.in_atomic_block:
        connection.close()
