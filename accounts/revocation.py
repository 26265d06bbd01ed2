"""Open websockets follow the account: when a person's sign-in or access ends, so do
their sockets.

Two close codes, which the chat page acts on:

- ``AUTH_GONE`` (4401): the session can no longer sign anything in. Logout closes the
  sockets of that session only (the person's other browsers stay signed in);
  deactivation and a password change (a reset included) close all of the person's
  sockets. A password change made through Django's ``update_session_auth_hash`` keeps
  the browser that made it signed in, but that call also gives its session a new key, so
  the sockets opened under the old key close too; the page's trip to the sign-in page
  lands that browser straight back on the chat, freshly connected.
- ``ACCESS_CHANGED`` (4403): still signed in, but what the person may see changed
  (removed from an org, a new role). The page reloads once to show the new access.

The sockets are realtime's (above accounts): once the change commits, accounts announces
it (``sockets_revoked``) and realtime sends the close through its one boundary. Pub/sub can
lose a message (a Redis blip), so the consumer also calls :func:`ensure_session_current`
before every command it runs.

Imports no model at module level: realtime's app module imports the receiver's module
before Django may load models.
"""

from __future__ import annotations

import functools
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.crypto import constant_time_compare

AUTH_GONE = 4401
ACCESS_CHANGED = 4403

# Sent after the change commits: close the person's open sockets with ``code`` and
# ``reason`` (receiver: realtime.publishing). kwargs: user_id, session_key (None: every
# socket of the person; else only those opened with that session), code, reason
sockets_revoked = Signal()


class SessionEnded(Exception):
    """The socket's session no longer signs its user in (signed out, deactivated,
    password changed)."""


def revoke_sockets(
    *, user_id: int, code: int, reason: str, session_key: str | None = None
) -> None:
    """Close the person's open sockets (only those of ``session_key`` when given) once the
    current transaction commits, so a reconnecting page already sees the change."""
    transaction.on_commit(lambda: sockets_revoked.send(
        sender=None, user_id=user_id, session_key=session_key, code=code, reason=reason,
    ), robust=True)


def ensure_session_current(*, session_key: str | None, user_id: int) -> None:
    """Raise SessionEnded unless ``session_key`` still signs in ``user_id``, exactly as the
    next HTTP request would see it: the session exists and names this user and a configured
    backend, the user is active, and the session's password hash is the current one.

    One read and no writes (unlike ``django.contrib.auth.get_user``, which flushes or
    re-keys a stale session: this session belongs to the browser, not to us): with the
    database session engine the session and the user come in one statement; with
    another, the store's own load and one primary-key read.
    """
    if not session_key:
        raise SessionEnded
    data, password = _session_and_password(session_key, user_id)
    if password is None or data.get(SESSION_KEY) != str(user_id) or (
        data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS
    ):
        raise SessionEnded
    user = get_user_model()(pk=user_id, password=password)
    stored = data.get(HASH_SESSION_KEY) or ""
    if not constant_time_compare(stored, user.get_session_auth_hash()) and not any(
        constant_time_compare(stored, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    ):
        raise SessionEnded


def _session_and_password(session_key: str, user_id: int) -> tuple[dict[str, Any], str | None]:
    """The session's data ({} when it is gone or expired) and the user's password hash
    (None unless the user exists and is active)."""
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    if store_class is DatabaseSessionStore:  # not a subclass that caches (cached_db)
        # Written out rather than built as a queryset on every command: Django's
        # building and compiling of it cost more than PostgreSQL spent running it.
        with connection.cursor() as cursor:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(_session_and_password_sql(), [user_id, session_key, now])
            row = cursor.fetchone()
        if row is None:
            return {}, None
        return store_class().decode(row[0]), row[1]
    data = store_class(session_key=session_key).load()
    users = get_user_model().objects.filter(pk=user_id, is_active=True)
    return data, users.values_list("password", flat=True).first()


@functools.cache
def _session_and_password_sql() -> str:
    """The session's data and, in the same row, the user's password hash while the user
    is active (parameters: user id, session key, now)."""
    quote = connection.ops.quote_name
    sessions = DatabaseSessionStore.get_model_class()._meta
    users = get_user_model()._meta

    def column(meta: Any, name: str) -> str:
        field = meta.get_field(name)
        return quote(field.column)

    def session(name: str) -> str:
        return "s." + column(sessions, name)

    def user(name: str) -> str:
        return "u." + column(users, name)

    return (f"SELECT {session('session_data')},"
            f" (SELECT {user('password')} FROM {quote(users.db_table)} AS u"
            f" WHERE u.{quote(users.pk.column)} = %s AND {user('is_active')})"
            f" FROM {quote(sessions.db_table)} AS s"
            f" WHERE {session('session_key')} = %s AND {session('expire_date')} > %s")
