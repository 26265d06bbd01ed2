"""A whole turn's SQL, counted phase by phase over the real path (issue 23).

The web side runs the socket's send as ``realtime.consumers.ChatConsumer.on_send`` does
(the session's re-check, then ``answers.replies.start_turn`` and its after-commit
publish); the worker's side runs as ``answers.engine`` does (the claim and the prompt in
the task's thread, then the answer on the event loop, streamed from the emulator, to its
ending and settlement). Every database call runs in this thread (``engine.run_here``), so
one execute wrapper sees each statement the client sends.

PostgreSQL also runs statements of its own for a turn: a foreign-key check per
referencing column written (at commit: Django's constraints are deferred) and the
statements of any trigger (the search queue's). ``auto_explain``, loaded into this test's
sessions, reports each of them to the client as a notice, and they are counted apart.
Each phase's statements are printed (run with ``-s`` to see them).

The answer streams for well under ``STREAM_CHECKPOINT_SECONDS``: a longer one adds a
checkpoint (one UPDATE) every 3 s, at most ``STREAM_MAX_CHECKPOINTS``. The reply
monitor's lease renewal and Stop poll are one statement each per worker process and
tick, shared by all its live answers, so they are not a turn's.

Before issue 23 a follow-up turn ran 17 statements (start 9, claim 2, prompt 1, finish 5)
and 11 foreign-key checks; a new conversation's 18 and 13.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import Client

from accounts.models import User
from answers import generation
from answers.engine import engine
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from conversations.tree import AFTER_LEAF
from realtime.consumers import ChatConsumer
from realtime.turns import operations

pytestmark = [pytest.mark.django_db(transaction=True)]

T = TypeVar("T")

# Statements the client sends for one turn, web and worker together (issue 23: at most 15).
TURN_STATEMENTS = 15
# What PostgreSQL runs on its own for one (docs/decisions.md#0045), as measured when the
# turn's statements were cut: a new check or trigger statement fails here.
FOREIGN_KEY_CHECKS = {"follow-up": 7, "new conversation": 10}
TRIGGER_STATEMENTS = 2
PHASES = ("start", "claim", "prompt", "stream", "finish")


@dataclass
class Statements:
    """What reached PostgreSQL during each phase of a turn."""

    phase: str | None = None
    sent: dict[str, list[str]] = field(default_factory=dict)
    fk_checks: dict[str, list[str]] = field(default_factory=dict)
    nested: dict[str, list[str]] = field(default_factory=dict)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 context: Any) -> Any:
        if self.phase is not None:
            self.sent.setdefault(self.phase, []).append(sql)
        return execute(sql, params, many, context)

    def notice(self, diagnostic: Any) -> None:
        """One auto_explain notice: a statement the server ran, the client's or its own."""
        if self.phase is None:
            return
        text = str(diagnostic.message_primary or "")
        if "plan:" not in text:
            return
        sql = json.loads(text.split("plan:", 1)[1])["Query Text"]
        if "FOR KEY SHARE OF" in sql:
            self.fk_checks.setdefault(self.phase, []).append(sql)
        elif not _is_top_level(sql, self.sent.get(self.phase, [])):
            self.nested.setdefault(self.phase, []).append(sql)

    def during(self, phase: str, func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> T:
            previous, self.phase = self.phase, phase
            try:
                return func(*args, **kwargs)
            finally:
                self.phase = previous

        return run

    def count(self, phase: str) -> int:
        return len(self.sent.get(phase, []))

    def total(self) -> int:
        return sum(self.count(phase) for phase in PHASES)

    def checks(self) -> int:
        return sum(len(sqls) for sqls in self.fk_checks.values())

    def triggered(self) -> int:
        return sum(len(sqls) for sqls in self.nested.values())

    def report(self, title: str) -> str:
        lines = [f"--- {title}: {self.total()} statements, {self.checks()} foreign-key "
                 f"checks, {self.triggered()} trigger statements"]
        for phase in PHASES:
            lines.append(f"{phase:>7}: {self.count(phase):2} statements, "
                         f"{len(self.fk_checks.get(phase, [])):2} FK checks, "
                         f"{len(self.nested.get(phase, [])):2} trigger statements")
            lines += [f"           {_short(sql)}" for sql in self.sent.get(phase, [])]
            lines += [f"        fk {_short(sql)}" for sql in self.fk_checks.get(phase, [])]
            lines += [f"   trigger {_short(sql)}" for sql in self.nested.get(phase, [])]
        return "\n".join(lines)


def _is_top_level(sql: str, sent: list[str]) -> bool:
    """Whether the server's query text is one the client sent (placeholders aside)."""
    words = _words(sql)
    return any(_words(mine) == words for mine in sent)


def _words(sql: str) -> str:
    return re.sub(r"%s|\$\d+|%\(\w+\)s", "?", " ".join(sql.replace("%%", "%").split()))


def _short(sql: str, width: int = 150) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@pytest.fixture
def statements() -> Iterator[Statements]:
    """Counts this thread's statements, and asks PostgreSQL (auto_explain at notice
    level) to report every statement it runs, nested ones included, in every session
    this test opens (the worker's side closes its connection between writes)."""
    recorder = Statements()
    here = threading.get_ident()

    def explain(connection: Any, **kwargs: Any) -> None:
        # This thread's sessions only: the reply monitor's thread polls for Stop once a
        # second for all of a worker's live answers together, not per turn.
        if threading.get_ident() != here:
            return
        raw = connection.connection
        for sql in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_nested_statements = on",
                    "SET auto_explain.log_level = 'notice'", "SET auto_explain.log_format = 'json'", "SET client_min_messages = 'notice'"):
            raw.execute(sql)
        if not getattr(raw, "_turn_statements_noticed", False):
            raw.add_notice_handler(lambda diagnostic: recorder.notice(diagnostic)
                                   if threading.get_ident() == here else None)
            raw._turn_statements_noticed = True

    connection_created.connect(explain, weak=False, dispatch_uid="turn-statements")
    connection.close()  # the next query opens a session with auto_explain loaded
    try:
        with connection.execute_wrapper(recorder):
            yield recorder
    finally:
        connection_created.disconnect(dispatch_uid="turn-statements")
        connection.close()
        # The notice handler lives on the pooled psycopg connection: leave none behind.
        if hasattr(connection, "close_pool"):
            connection.close_pool()


def _socket_of(user: User) -> ChatConsumer:
    """A chat socket's state after connect(): its user and its session."""
    client = Client()
    client.force_login(user)
    consumer = ChatConsumer()
    consumer.user = user
    consumer.session_key = client.session.session_key
    return consumer


def _turn(socket: ChatConsumer, recorder: Statements, *, conversation_id: int | None,
          content: str) -> Message:
    """One turn, each phase counted: what ``on_send`` runs, then what a worker runs
    (``Engine.hand_over``: ``generation.take``, then ``generation.answer`` on the loop)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation, "claim", recorder.during("claim", generation.claim))
        patch.setattr(generation, "_prepare_after_claim",
                      recorder.during("prompt", generation._prepare_after_claim))
        patch.setattr(generation, "_finish_released",
                      recorder.during("finish", generation._finish_released))
        start = recorder.during("start", socket._checked(operations().start))
        turn = start(
            user=socket.user, organization_id=None, conversation_id=conversation_id,
            content=content, reasoning_effort="low", client_id="tab-1", profile_name=None,
            parent_id=AFTER_LEAF,
        )
        taken = generation.take(turn.assistant_message.pk)
        assert taken is not None
        message, resume, prepared = taken
        assert prepared is not None  # built right after the claim, as a worker does
        recorder.during("stream", engine.run_here)(
            lambda runtime: generation.answer(message, resume, runtime, prepared))
    return Message.objects.get(pk=turn.assistant_message.pk)


def _assert_whole(answer: Message) -> None:
    """The turn ended once, settled to its exact cost, with nothing left held."""
    assert answer.status == Message.Status.DONE, (answer.error_code, answer.error_detail)
    assert answer.content
    reservation = Reservation.objects.get(message=answer)
    assert reservation.settled_at is not None and reservation.charged_usd == answer.cost_usd
    assert all(row.reserved_usd == 0 for row in UsagePeriod.objects.all())


@pytest.fixture
def warmed(alice: User, o3_mini: Any, emulator: Any, settings: Any) -> tuple[ChatConsumer, Message]:
    """A finished first turn: the month's usage rows, the catalog's sync mark and the
    compiled statements exist from here on, as on a server that has run a while."""
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 1
    emulator.config.reply_tokens = 40
    socket = _socket_of(alice)
    first = _turn(socket, Statements(), conversation_id=None, content="Explain Euler's identity")
    _assert_whole(first)
    return socket, first


def _assert_within_budget(statements: Statements, kind: str) -> None:
    report = statements.report(f"a {kind} turn")
    print("\n" + report)
    assert statements.total() <= TURN_STATEMENTS, report
    assert statements.checks() <= FOREIGN_KEY_CHECKS[kind], report
    assert statements.triggered() <= TRIGGER_STATEMENTS, report


def test_a_follow_up_turn_runs_at_most_15_statements(
    warmed: tuple[ChatConsumer, Message], statements: Statements
) -> None:
    socket, first = warmed
    answer = _turn(socket, statements, conversation_id=first.conversation_id,
                   content="And why does it hold?")
    _assert_whole(answer)
    _assert_within_budget(statements, "follow-up")


def test_a_new_conversations_turn_runs_at_most_15_statements(
    warmed: tuple[ChatConsumer, Message], statements: Statements
) -> None:
    socket, _ = warmed
    answer = _turn(socket, statements, conversation_id=None, content="What is a monad?")
    _assert_whole(answer)
    _assert_within_budget(statements, "new conversation")
