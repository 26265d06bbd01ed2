"""The chat websocket: commands in, progress out. Postgres stays the source of truth."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from accounts.revocation import AUTH_GONE, SessionEnded, ensure_session_current
from chatsite import metrics
from chatsite.errors import Refused
from conversations.access import get_message_for_user
from conversations.models import Message
from conversations.transcript import branch_frame
from conversations.tree import AFTER_LEAF, select_branch
from llm.catalog import KNOWN_EFFORTS
from realtime.backpressure import queue_position
from realtime.frames import (
    error_frame,
    final_frame,
    message_created_frame,
    queued_frame,
    snapshot_frame,
)
from realtime.publishing import EVENT_TYPE, message_group, session_group, user_group
from realtime.replay import get_replay_store
from realtime.socket_limits import TOO_MANY_SOCKETS, TOO_MANY_SOCKETS_REASON, SocketSlot
from realtime.turns import Turn, operations

logger = logging.getLogger(__name__)

DATABASE_FAILED_DETAIL = (
    "That could not be done just now: the database did not answer. Try again in a moment."
)

T = TypeVar("T")
MAX_CLIENT_ID = 64
# A waiting answer's place in the queue is counted at most this often per answer.
QUEUE_POLL_SECONDS = 1.0


# Starting a turn takes a dozen queries inside one transaction; on Channels' single
# thread-sensitive executor every tab's turn would queue behind every other's. A small
# dedicated pool lets turns start in parallel, each thread returning its connection to
# the pool when it is done.
_turn_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="turns")


def _in_turn_thread(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    def run(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            connection.close()

    return sync_to_async(run, thread_sensitive=False, executor=_turn_executor)


def _dumps(frame: dict[str, Any]) -> str:
    """A frame as compact JSON text. orjson: every streamed frame to every tab is
    serialised here, several thousand a second under load. A string no UTF-8 encoder
    takes (a lone surrogate a provider sent as a JSON escape) falls back to json's
    escaping instead of dropping the frame."""
    try:
        return orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(frame, separators=(",", ":"))


class FrameError(Exception):
    def __init__(self, detail: str, message: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.message = message


def _int_field(frame: dict[str, Any], name: str, *, nullable: bool = False) -> int | None:
    value = frame.get(name)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**62:
        raise FrameError(f"'{name}' must be a non-negative integer id.")
    return value


def _effort_field(frame: dict[str, Any], message: int | None = None) -> str | None:
    """The frame's reasoning effort if it is one the API knows; None asks for the
    profile's default. Which efforts a model takes is its profile's to say
    (``answers.replies._effort_for``), so the send, edit and regenerate paths all refuse an
    effort the model lacks in one place, naming the ones it takes."""
    effort = frame.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in KNOWN_EFFORTS):
        raise FrameError(
            "'reasoning_effort' must be one of " + ", ".join(KNOWN_EFFORTS) + ".", message
        )
    return effort


def _continues(frames: list[dict[str, Any]], after_seq: int) -> bool:
    """Whether buffered ``frames`` carry on from ``after_seq`` without a hole."""
    expected = after_seq + 1
    for frame in sorted(frames, key=lambda f: f.get("seq", 0)):
        if frame.get("seq") is None:
            continue
        if frame["seq"] != expected:
            return False
        expected += 1
    return True


class ChatConsumer(AsyncWebsocketConsumer):
    ended = False  # set once the account's access ended: nothing more is sent or run
    counted = False  # among the open websockets of the metrics, until disconnect()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.following: dict[int, int] = {}  # message id → last seq sent to this socket
        # Answers of this socket waiting for a worker → the task reporting their place.
        self.queue_watchers: dict[int, asyncio.Task[None]] = {}
        self.session_key: str | None = self.scope["session"].session_key
        # Joined so a logout, deactivation, password or access change closes this socket
        # (accounts.revocation publishes to these groups).
        self.account_groups = [user_group(user.pk)]
        if self.session_key:
            self.account_groups.append(session_group(self.session_key))
        for group in self.account_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        # Race: a logout between the middleware reading the session and the subscriptions
        # above published to nobody; checking again after subscribing closes that window.
        try:
            await database_sync_to_async(self._checked(lambda: None))()
        except SessionEnded:
            await self.close(code=AUTH_GONE)
            return
        self.slot = SocketSlot(user.pk)
        if not await self.slot.take():
            # Accepted only to say why: a refused handshake reaches the page as a bare 1006.
            await self.accept()
            await self.close(code=TOO_MANY_SOCKETS, reason=TOO_MANY_SOCKETS_REASON)
            return
        await self.accept()
        metrics.socket_opened()
        self.counted = True

    async def disconnect(self, code: int) -> None:
        if self.counted:
            self.counted = False
            metrics.socket_closed()
        slot = getattr(self, "slot", None)
        if slot is not None:
            await slot.give_back()
        for message_id in list(getattr(self, "queue_watchers", {})):
            self.stop_watching_queue(message_id)
        for message_id in list(getattr(self, "following", {})):
            await self.channel_layer.group_discard(message_group(message_id), self.channel_name)
        for group in getattr(self, "account_groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    def _checked(self, func: Callable[..., T]) -> Callable[..., T]:
        """``func`` run only while this socket's session still signs its user in: the
        backstop for a revocation event lost in pub/sub. Runs in the caller's thread, so
        it adds two primary-key reads to the command and no extra thread hop."""
        session_key, user_id = self.session_key, self.user.pk

        def run(*args: Any, **kwargs: Any) -> T:
            ensure_session_current(session_key=session_key, user_id=user_id)
            return func(*args, **kwargs)

        return run

    # --- Commands from the browser ---------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.send_error("invalid_request", "Frames must be JSON text.")
            return
        if len(text_data) > settings.MAX_MESSAGE_CHARS * 2 + 1024:
            await self.send_error("invalid_request", "Frame too large.")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self.send_error("invalid_request", "Frames must be JSON.")
            return
        if not isinstance(frame, dict):
            await self.send_error("invalid_request", "Frames must be JSON objects.")
            return
        kind = frame.get("type")
        # A non-string type (a list, an object) is a bad frame, not a crash: it cannot
        # be a dict key.
        handler = (
            {
                "send": self.on_send, "stop": self.on_stop, "resume": self.on_resume,
                "regenerate": self.on_regenerate, "select": self.on_select,
            }.get(kind)
            if isinstance(kind, str)
            else None
        )
        if handler is None:
            await self.send_error("invalid_request", "Unknown frame type.")
            return
        if self.ended:
            return  # closing: a command that raced the close is not run
        # The answer a refusal is about, when the command named one.
        about = frame.get("message") if isinstance(frame.get("message"), int) else None
        try:
            await handler(frame)
        except SessionEnded:
            await self.end_session(AUTH_GONE)
        except FrameError as error:
            await self.send_error("invalid_request", error.detail, error.message)
        except Refused as refusal:
            await self.send_error(refusal.code, refusal.detail, about,
                                  retry_after=getattr(refusal, "retry_after", None))
        except DatabaseError:
            # The database failed the command (it went away, or ended the transaction):
            # the command's transaction rolled back, and the socket stays open to try again.
            logger.exception("the %s command failed in the database", kind)
            await self.send_error("service_unavailable", DATABASE_FAILED_DETAIL, about)

    async def on_send(self, frame: dict[str, Any]) -> None:
        conversation_id = _int_field(frame, "conversation", nullable=True)
        content = frame.get("content")
        if not isinstance(content, str):
            raise FrameError("'content' must be a string.")
        effort = _effort_field(frame)
        client_id = frame.get("client_id", "")
        if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID:
            raise FrameError("'client_id' must be a string of at most 64 characters.")
        organization_id = self.scope["session"].get("organization_id")
        profile_name = frame.get("profile")
        if profile_name is not None and not isinstance(profile_name, str):
            raise FrameError("'profile' must be a string.")
        # Omitted: after the branch on screen; null: a new first question (an edit of it).
        parent = _int_field(frame, "parent", nullable=True) if "parent" in frame else AFTER_LEAF
        turn = await _in_turn_thread(self._checked(operations().start))(
            user=self.user,
            organization_id=organization_id,
            conversation_id=conversation_id,
            content=content,
            reasoning_effort=effort,
            client_id=client_id,
            profile_name=profile_name,
            parent_id=parent,
        )
        await self.started(turn, client_id)

    async def on_regenerate(self, frame: dict[str, Any]) -> None:
        message_id = _int_field(frame, "message")
        assert message_id is not None
        effort = _effort_field(frame, message_id)
        client_id = frame.get("client_id", "")
        if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID:
            raise FrameError("'client_id' must be a string of at most 64 characters.")
        profile_name = frame.get("profile")
        if profile_name is not None and (not isinstance(profile_name, str) or len(profile_name) > 100):
            raise FrameError("'profile' must be a model profile's name.", message_id)
        turn = await _in_turn_thread(self._checked(operations().regenerate))(
            user=self.user, message_id=message_id, reasoning_effort=effort, client_id=client_id,
            profile_name=profile_name or None,
        )
        await self.started(turn, client_id)

    async def on_select(self, frame: dict[str, Any]) -> None:
        message_id = _int_field(frame, "message")
        assert message_id is not None

        def select() -> dict[str, Any]:
            return branch_frame(select_branch(user=self.user, message_id=message_id))

        await self.send_json(await _in_turn_thread(self._checked(select))())

    async def started(self, turn: Turn, client_id: str) -> None:
        message_id = turn.assistant_message.pk
        await self.follow(message_id, 0)
        # message.created says how many wait ahead; `queued` frames follow as the queue
        # moves (and say "next" for an answer still unclaimed a second later).
        await self.send_json(message_created_frame(turn, client_id))
        self.watch_queue(message_id, shown=turn.queued_ahead or None)
        # The worker may have started before this socket joined the group: anything it
        # published meanwhile is in the buffer (live duplicates are dropped by seq).
        for buffered in await get_replay_store().read_after(message_id, 0):
            await self.forward(buffered)

    async def on_stop(self, frame: dict[str, Any]) -> None:
        message_id = _int_field(frame, "message")
        assert message_id is not None
        await _in_turn_thread(self._checked(operations().stop))(
            user=self.user, message_id=message_id
        )

    async def on_resume(self, frame: dict[str, Any]) -> None:
        message_id = _int_field(frame, "message")
        after_seq = _int_field(frame, "after_seq")
        assert message_id is not None and after_seq is not None
        message = await database_sync_to_async(self._checked(get_message_for_user))(
            self.user, message_id
        )
        # Subscribe before reading the buffer: a frame published in between is then both
        # buffered and delivered live, and the seq check drops the duplicate.
        await self.follow(message_id, after_seq, rewind=True)
        if message.status == Message.Status.PENDING:
            self.watch_queue(message_id, shown=None)  # a reloaded tab learns its place
        buffered = await get_replay_store().read_after(message_id, after_seq)
        if _continues(buffered, after_seq):
            for frame_ in buffered:
                await self.forward(frame_)
            if message_id not in self.following:
                return  # the buffer held everything up to the final frame
        # The buffer cannot fill the tab's gap (it expired, or Redis lost frames), or it
        # ended before the final frame: Postgres has the rest. Never forward a later
        # frame over the hole, which would leave the tab asking for it again forever.
        message = await database_sync_to_async(Message.objects.get)(pk=message_id)
        if message_id not in self.following:
            return  # the final frame arrived live meanwhile
        if self.following[message_id] < message.stream_seq:
            # The saved text whole instead of the lost deltas.
            await self.send_json(snapshot_frame(message))
            self.following[message_id] = message.stream_seq
            for frame_ in buffered:
                if frame_.get("seq", 0) == self.following.get(message_id, -1) + 1:
                    await self.forward(frame_)
        if message.status not in Message.LIVE_STATUSES:
            await self.forward(final_frame(message))

    async def follow(self, message_id: int, after_seq: int, *, rewind: bool = False) -> None:
        if self.ended:
            return  # the session ended while this command ran: follow nothing new
        if message_id not in self.following:
            await self.channel_layer.group_add(message_group(message_id), self.channel_name)
        # An explicit resume rewinds: the tab says what it has, even if this socket sent
        # more (a frame it lost in transit); the tab drops any duplicate by seq.
        self.following[message_id] = (
            after_seq if rewind else max(after_seq, self.following.get(message_id, 0))
        )

    def watch_queue(self, message_id: int, *, shown: int | None) -> None:
        """Report the answer's place in the queue (a ``queued`` frame when it changes)
        until a worker claims it or any frame of it arrives."""
        if self.ended or message_id in self.queue_watchers:
            return
        self.queue_watchers[message_id] = asyncio.create_task(
            self._report_queue(message_id, shown)
        )

    def stop_watching_queue(self, message_id: int) -> None:
        task = self.queue_watchers.pop(message_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _report_queue(self, message_id: int, shown: int | None) -> None:
        try:
            while message_id in self.following and not self.ended:
                await asyncio.sleep(QUEUE_POLL_SECONDS)
                ahead = await _in_turn_thread(queue_position)(message_id=message_id)
                # Claimed or ended meanwhile (its next frame stopped this watch).
                if ahead is None or message_id not in self.queue_watchers:
                    return
                if ahead != shown:
                    shown = ahead
                    await self.send_json(queued_frame(message_id, ahead))
        except Exception:
            # A lost count only costs the tab its "Queued" label; the answer goes on.
            logger.exception("could not count the queue ahead of answer %s", message_id)
        finally:
            if self.queue_watchers.get(message_id) is asyncio.current_task():
                del self.queue_watchers[message_id]

    async def unfollow(self, message_id: int) -> None:
        self.stop_watching_queue(message_id)
        if self.following.pop(message_id, None) is not None:
            await self.channel_layer.group_discard(message_group(message_id), self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a round trip
        # through its one thread-sensitive executor, which every socket's commands then
        # queue behind. This consumer's handlers never touch the database on the loop:
        # the turn threads (_in_turn_thread) and database_sync_to_async close stale
        # connections around each call themselves. A stream frame, thousands a second
        # under load, goes straight to its handler.
        if message.get("type") == EVENT_TYPE:
            await self.stream_frame(message)
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- Events from workers and from account changes ------------------------------------------

    async def stream_frame(self, event: dict[str, Any]) -> None:
        await self.forward(event["frame"])

    async def account_revoked(self, event: dict[str, Any]) -> None:
        """Signed out, deactivated, password or access changed (accounts.revocation)."""
        await self.end_session(event["code"])

    async def end_session(self, code: int) -> None:
        """Forward nothing more, run no more commands, and close with ``code``."""
        if self.ended:
            return
        self.ended = True
        for message_id in list(self.following):
            await self.unfollow(message_id)
        await self.close(code=code)

    async def forward(self, frame: dict[str, Any]) -> None:
        message_id = frame["message"]
        last = self.following.get(message_id)
        if last is None:
            return  # not following (anymore): never send another person's frames
        if self.queue_watchers:
            self.stop_watching_queue(message_id)  # a worker has it: no longer queued
        seq = frame.get("seq")
        if seq is not None:
            if seq <= last:
                return  # already sent from the buffer or live
            self.following[message_id] = seq
        await self.send_json(frame)
        if frame["type"] in ("done", "error"):
            await self.unfollow(message_id)

    async def send_json(self, frame: dict[str, Any]) -> None:
        if self.ended:
            return
        await self.send(text_data=_dumps(frame))

    async def send_error(self, code: str, detail: str, message: int | None = None, *,
                         retry_after: int | None = None) -> None:
        await self.send_json(error_frame(code, detail, message, retry_after=retry_after))
