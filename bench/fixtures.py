"""Django inside the bench process (same settings as the servers): users, sessions,
their team, the tabs' conversations, the message-id offset and the page query count.

Only synchronous code lives here; it runs before and between the asyncio phases.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

MESSAGE_ID_FLOOR = 1_000_000_000
USER_EMAIL = "bench-user-{:04d}@bench.invalid"
PAGE_TITLE = "bench page ({} messages)"
TAB_TITLE = "bench tab"
# A new conversation's title: the fallback the product gives it from the question
# ("bench", load.send_frame), and what the emulator's title reply says.
NEW_TITLE = "bench"
TEAM_NAME = "Bench team"
# Conversations deleted per statement when a run clears the previous one's.
DELETE_BATCH = 1_000


def setup_django() -> None:
    import django

    django.setup()


def raise_message_ids() -> None:
    """Start bench message ids above 10^9.

    The channel layer groups are ``message.<id>`` and Redis pub/sub channels are not
    scoped by Redis database number, so a test suite running at the same time against
    the same Redis server (another database) would share ``message.5`` with the bench.
    Ids from a separate range keep the two apart.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('conversations_message', 'id')")
        (sequence,) = cursor.fetchone()
        cursor.execute(
            "SELECT setval(%s, GREATEST((SELECT last_value FROM " + sequence + "), %s))",
            [sequence, MESSAGE_ID_FLOOR],
        )


@dataclass
class BenchUser:
    pk: int
    email: str
    session_key: str


def users_and_sessions(count: int, *, team: bool = False) -> tuple[list[BenchUser], int | None]:
    """``count`` users made by the product's ``sign_up`` (each owns an organization),
    reused across runs, each with a fresh authenticated session; with ``team`` all of
    them are also members of one org, which their sessions have chosen (new chats go
    there). Returns the users and the team org's id (None without ``team``).

    Passwords are hashed with MD5 here only to save ~0.9 s of PBKDF2 per user; nobody
    logs in with them: the sessions are created directly, as ``login()`` would.
    """
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.test.utils import override_settings

    from accounts.models import User
    from accounts.onboarding import sign_up

    emails = [USER_EMAIL.format(i) for i in range(count)]
    existing = {user.email: user for user in User.objects.filter(email__in=emails)}
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        users = [existing.get(email) or sign_up(
            email=email, password="bench-password-not-used",
            organization_name=f"Bench org {email[11:15]}", budgeted=False) for email in emails]
    team_id = join_team([user.pk for user in users]) if team else None
    result: list[BenchUser] = []
    for user in users:
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        # As login() records it: the backend that can load the user (django-axes, first
        # in AUTHENTICATION_BACKENDS, only guards sign-in and has no get_user).
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        if team_id is not None:
            store["organization_id"] = team_id  # as switching org on the page records it
        store.create()
        result.append(BenchUser(user.pk, user.email, store.session_key or ""))
    return result, team_id


def join_team(user_pks: list[int]) -> int:
    """One org for all bench users (made once, no budget, the first user its owner), as
    the members of a team use one; returns its id. Each keeps the org it owns."""
    from accounts.models import Membership, Organization

    team = Organization.objects.filter(name=TEAM_NAME).order_by("pk").first()
    if team is None:
        team = Organization.objects.create(name=TEAM_NAME, monthly_budget_usd=None)
    Membership.objects.bulk_create(
        [Membership(user_id=pk, organization=team,
                    role=Membership.Role.OWNER if i == 0 else Membership.Role.MEMBER)
         for i, pk in enumerate(user_pks)],
        ignore_conflicts=True,  # members from an earlier run stay as they are
    )
    return team.pk


def new_conversation_turns(tabs: int, per_tab: int, share: float) -> list[list[bool]]:
    """Which turns of each tab start a new conversation: ``share`` of every tab's turns
    (within one), spread evenly over its turns, and out of phase between tabs (tab i is
    shifted by i / tabs of a period) so that the new conversations of a step do not
    arrive together."""
    plan = []
    for tab in range(tabs):
        phase = tab / tabs
        plan.append([math.floor((turn + 1) * share + phase) > math.floor(turn * share + phase)
                     for turn in range(per_tab)])
    return plan


def tab_conversations(user_pks: list[int], per_tab: int, *, new_share: float = 0.0,
                      organization_id: int | None = None,
                      history_tokens: int = 0) -> list[list[int | None]]:
    """What each tab (one per user, in ``user_pks`` order) asks in at each of its
    ``per_tab`` turns: None for a turn that starts a new conversation (``new_share`` of
    them, see ``new_conversation_turns``), else an existing, titled conversation of that
    user in the org ``organization_id`` picks (their own org when None) that holds one
    earlier exchange (a question and a done answer of ``history_tokens`` plain words).

    Why an existing conversation per turn rather than the tab's previous one: the
    emulator's timestamped tokens (" 17@1764480000.123456") are about 11 model tokens
    each, so one 300-token answer is 6,800 characters; continuing the tab's own
    conversation would make every later turn count (web and worker) and send a history
    5-6 times larger than a real one. A new conversation is untitled: after its first
    answer the product asks the model for a title (the emulator answers it as JSON in
    ``json_reply_ms``). The previous run's tab conversations of these users are deleted
    first, the new ones the product made included.
    """
    from accounts.model_access import default_profile
    from accounts.models import User
    from conversations.access import get_membership
    from conversations.models import Conversation

    earlier = list(Conversation.objects.filter(
        user_id__in=user_pks, title__in=(TAB_TITLE, NEW_TITLE)).values_list("pk", flat=True))
    # In batches: a short-answer run leaves thousands, and Django's cascade names every
    # related row in one statement (PostgreSQL takes at most 65,535 parameters).
    for start in range(0, len(earlier), DELETE_BATCH):
        Conversation.objects.filter(pk__in=earlier[start:start + DELETE_BATCH]).delete()
    plan = new_conversation_turns(len(user_pks), per_tab, new_share)
    users = User.objects.in_bulk(user_pks)
    rows = []
    for pk, turns in zip(user_pks, plan, strict=True):
        organization = get_membership(users[pk], organization_id).organization
        profile = default_profile(organization)
        if profile is None:
            raise RuntimeError(f"{organization} has no model profile to benchmark with")
        rows += [Conversation(organization=organization, user=users[pk], profile=profile,
                              title=TAB_TITLE, title_generated=True) for new in turns if not new]
    created = Conversation.objects.bulk_create(rows)
    if history_tokens > 0:
        _earlier_exchange(created, history_tokens)
    existing = iter(conversation.pk for conversation in created)
    return [[None if new else next(existing) for new in turns] for turns in plan]


def _earlier_exchange(conversations: list[Any], answer_tokens: int) -> None:
    """One question and its done answer in each conversation, shown as its branch."""
    from django.utils import timezone

    from conversations.models import Conversation, Message
    from llm.tokens import message_tokens

    now = timezone.now()
    # With their token counts, as the product's own turns store them (counted once: every
    # conversation holds the same two texts).
    answer_text = " word" * answer_tokens
    question_count, answer_count = (message_tokens(text)
                                    for text in ("bench", answer_text))
    questions = Message.objects.bulk_create([
        Message(conversation=c, role=Message.Role.USER, content="bench", created_at=now,
                content_tokens=question_count)
        for c in conversations
    ])
    answers = Message.objects.bulk_create([
        Message(conversation=c, parent=q, role=Message.Role.ASSISTANT, status=Message.Status.DONE,
                profile=c.profile, model_name=c.profile.model, reasoning_effort="low",
                content=answer_text, content_tokens=answer_count,
                finish_reason="stop", prompt_tokens=10,
                completion_tokens=answer_tokens, stream_seq=2, created_at=now, finished_at=now)
        for c, q in zip(conversations, questions, strict=True)
    ])
    for conversation, answer in zip(conversations, answers, strict=True):
        conversation.current_leaf = answer
    Conversation.objects.bulk_update(conversations, ["current_leaf"], batch_size=500)


def _make_conversation(user_pk: int, size: int) -> int:
    from django.db import transaction
    from django.utils import timezone

    from accounts.model_access import default_profile
    from accounts.models import User
    from conversations.access import get_membership
    from conversations.models import Conversation, Message
    from conversations.tree import link_in_order

    user = User.objects.get(pk=user_pk)
    organization = get_membership(user, None).organization
    title = PAGE_TITLE.format(size)
    Conversation.objects.filter(user=user, title=title).delete()
    profile = default_profile(organization)
    if profile is None:
        raise RuntimeError(f"{organization} has no model profile to benchmark with")
    now = timezone.now()
    with transaction.atomic():
        conversation = Conversation.objects.create(
            organization=organization, user=user, profile=profile, title=title
        )
        rows = []
        for i in range(size):
            if i % 2 == 0:
                rows.append(Message(conversation=conversation, role=Message.Role.USER,
                                    content=f"Question {i}: how do the parts fit together?",
                                    created_at=now))
            else:
                rows.append(Message(
                    conversation=conversation, role=Message.Role.ASSISTANT,
                    status=Message.Status.DONE, profile=profile, model_name=profile.model,
                    reasoning_effort="low", content=f"Answer {i}. " + "Some **markdown** text. " * 20,
                    finish_reason="stop", prompt_tokens=100, completion_tokens=300,
                    stream_seq=10, created_at=now, finished_at=now,
                ))
        Message.objects.bulk_create(rows, batch_size=500)
        # One branch of `size` messages, as sends would have built it: the page shows it all.
        link_in_order(conversation, rows)
    return conversation.pk


def page_queries(user_pk: int, sizes: tuple[int, ...] = (10, 1000)) -> dict[str, Any]:
    """GET /c/<id>/ in-process with django.test.Client; count queries per page size."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User

    user = User.objects.get(pk=user_pk)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    conversations = {size: _make_conversation(user_pk, size) for size in sizes}
    warm = client.get(f"/c/{conversations[sizes[0]]}/")  # template and cache warm-up
    if warm.status_code != 200:
        raise RuntimeError(f"GET /c/<id>/ answered {warm.status_code}")
    pages: dict[str, Any] = {}
    for size, pk in conversations.items():
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(f"/c/{pk}/")
            elapsed = time.perf_counter() - started
        pages[str(size)] = {
            "conversation": pk,
            "status": response.status_code,
            "queries": len(captured.captured_queries),
            "render_ms": round(elapsed * 1000, 1),
            "bytes": len(response.content),
            "sql": [q["sql"][:300] for q in captured.captured_queries],
        }
    counts = {page["queries"] for page in pages.values()}
    return {"pages": pages, "constant": len(counts) == 1}


def pg_write_counters(conn: Any) -> dict[str, int]:
    """Inserts + updates (+ deletes for 'all tables') from pg_stat_user_tables."""
    row = conn.execute(
        "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd) FILTER (WHERE relname = 'conversations_message'), 0),"
        " COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
    ).fetchone()
    return {"message": int(row[0]), "all": int(row[1])}


def wait_for_pg_stats(conn: Any, *, quiet: float = 11.0, limit: float = 25.0) -> dict[str, int]:
    """Counters once they stop moving. Backends publish their statistics at most once a
    second and, when idle, after up to 10 s (PGSTAT_IDLE_INTERVAL), so wait that long."""
    deadline = time.monotonic() + limit
    last = pg_write_counters(conn)
    changed = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = pg_write_counters(conn)
        if current != last:
            last, changed = current, time.monotonic()
        elif time.monotonic() - changed >= quiet:
            break
    return last


def live_answers() -> int:
    from conversations.models import Message

    return Message.objects.filter(status__in=Message.LIVE_STATUSES).count()


def drain(limit: float) -> tuple[float, int]:
    """Wait until no answer is pending or streaming (a step whose clients timed out
    leaves the worker busy); returns (seconds waited, answers still live)."""
    started = time.monotonic()
    while True:
        live = live_answers()
        if live == 0 or time.monotonic() - started >= limit:
            return time.monotonic() - started, live
        time.sleep(0.5)


def cancel_leftovers() -> int:
    """Answers left pending/streaming by an aborted earlier run (their queued tasks were
    flushed with the bench's Redis database) would never finish: mark them cancelled."""
    from django.utils import timezone

    from conversations.models import Message

    return Message.objects.filter(status__in=Message.LIVE_STATUSES).update(
        status=Message.Status.CANCELLED, finish_reason="cancelled", lease_expires_at=None,
        finished_at=timezone.now(),
    )
