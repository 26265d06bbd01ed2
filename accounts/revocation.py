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

The close goes out as an ``account.revoked`` event through the one realtime boundary, after
the change commits. Pub/sub can lose a message (a Redis blip), so the consumer also calls
:func:`ensure_session_current` before every command it runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.db import transaction
from django.utils.crypto import constant_time_compare

from realtime.publishing import publish_event, session_group, user_group

AUTH_GONE = 4401
ACCESS_CHANGED = 4403
REVOKED_EVENT = "account.revoked"


class SessionEnded(Exception):
    """The socket's session no longer signs its user in (signed out, deactivated,
    password changed)."""


def revoke_sockets(
    *, user_id: int, code: int, reason: str, session_key: str | None = None
) -> None:
    """Close the person's open sockets (only those of ``session_key`` when given) once the
    current transaction commits, so a reconnecting page already sees the change."""
    group = session_group(session_key) if session_key else user_group(user_id)
    event: dict[str, Any] = {"type": REVOKED_EVENT, "code": code, "reason": reason}
    transaction.on_commit(lambda: publish_event(group, event), robust=True)


def ensure_session_current(*, session_key: str | None, user_id: int) -> None:
    """Raise SessionEnded unless ``session_key`` still signs in ``user_id``, exactly as the
    next HTTP request would see it: the session exists and names this user and a configured
    backend, the user is active, and the session's password hash is the current one.

    Two primary-key reads and no writes (unlike ``django.contrib.auth.get_user``, which
    flushes or re-keys a stale session: this session belongs to the browser, not to us).
    """
    from accounts.models import User

    if not session_key:
        raise SessionEnded
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    data = store.load()  # {} for a flushed or expired session
    if data.get(SESSION_KEY) != str(user_id) or (
        data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS
    ):
        raise SessionEnded
    user = User.objects.filter(pk=user_id, is_active=True).only("password").first()
    if user is None:
        raise SessionEnded
    stored = data.get(HASH_SESSION_KEY) or ""
    if not constant_time_compare(stored, user.get_session_auth_hash()) and not any(
        constant_time_compare(stored, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    ):
        raise SessionEnded
