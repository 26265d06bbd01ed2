"""Django inside the bench process (same settings as the servers): users, sessions,
the message-id offset and the page query count.

Only synchronous code lives here; it runs before and between the asyncio phases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

MESSAGE_ID_FLOOR = 1_000_000_000
USER_EMAIL = "bench-user-{:04d}@bench.invalid"
PAGE_TITLE = "bench page ({} messages)"
TAB_TITLE = "bench tab"


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


def users_and_sessions(count: int) -> list[BenchUser]:
    """``count`` users made by the product's ``sign_up`` (each owns an organization),
    reused across runs, each with a fresh authenticated session.

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
    result: list[BenchUser] = []
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        for email in emails:
            user = existing.get(email)
            if user is None:
                user = sign_up(email=email, password="bench-password-not-used",
                               organization_name=f"Bench org {email[11:15]}", budgeted=False)
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            # As login() records it: the backend that can load the user (django-axes, first
            # in AUTHENTICATION_BACKENDS, only guards sign-in and has no get_user).
            store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            result.append(BenchUser(user.pk, email, store.session_key or ""))
    return result


def tab_conversations(user_pks: list[int], per_tab: int) -> list[list[int]]:
    """``per_tab`` fresh, already titled conversations for each tab (one tab per user, in
    ``user_pks`` order): each turn of a tab asks its question in the next one.

    Why fresh and titled: the emulator's timestamped tokens (" 17@1764480000.123456") are
    about 11 model tokens each, so one 300-token answer is 6,800 characters; continuing
    one conversation would make every later turn count (web and worker) and send a
    history 5-6 times larger than a real one. A new untitled conversation instead queues
    a title call after its first answer, which in timestamps mode streams 3.5 s and fails,
    so the next answer queues another: work no real conversation causes. Title
    generation is therefore not part of this load. The previous run's tab conversations
    of these users are deleted first.
    """
    from accounts.models import User
    from conversations.access import get_membership
    from conversations.models import Conversation
    from llm.profiles import default_profile

    Conversation.objects.filter(user_id__in=user_pks, title=TAB_TITLE).delete()
    users = User.objects.in_bulk(user_pks)
    rows = []
    for pk in user_pks:
        organization = get_membership(users[pk], None).organization
        profile = default_profile(organization)
        if profile is None:
            raise RuntimeError(f"{organization} has no model profile to benchmark with")
        rows += [Conversation(organization=organization, user=users[pk], profile=profile,
                              title=TAB_TITLE, title_generated=True) for _ in range(per_tab)]
    created = [conversation.pk for conversation in Conversation.objects.bulk_create(rows)]
    return [created[i : i + per_tab] for i in range(0, len(created), per_tab)]


def _make_conversation(user_pk: int, size: int) -> int:
    from django.db import transaction
    from django.utils import timezone

    from accounts.models import User
    from conversations.access import get_membership
    from conversations.models import Conversation, Message
    from conversations.tree import link_in_order
    from llm.profiles import default_profile

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
