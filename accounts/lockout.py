"""Sign-in lockout on django-axes: three counts, each with its own limit and its own way out.

- One account from one client (``LOGIN_FAILURES_PER_ACCOUNT``): that client is paused for
  that account only (axes' ``["username", "ip_address"]`` combination), so a guesser
  locks out itself, never the owner on her own device.
- One client across accounts (``LOGIN_FAILURES_PER_CLIENT``): that client is paused for
  every account, so one address cannot spray many accounts.
- One account from all clients (``LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS``): clients that
  never signed in to that account are paused, while a device that did (a signed cookie set
  on sign-in) still signs in. Guessing spread over many addresses gets that many tries per
  window.

Refused attempts are not recorded (``AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT =
False``), so a pause ends ``LOGIN_LOCKOUT_MINUTES`` after the failure that caused it. A
completed password reset forgets the account's failures from every client
(``forgive_account``). Each count is scaled onto axes' single limit, ``AXES_FAILURE_LIMIT``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.utils import reset as reset_attempts
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.crypto import salted_hmac

Reason = Literal["client", "account_here", "account_elsewhere"]

KNOWN_DEVICE_COOKIE = "known_device"
KNOWN_DEVICE_DAYS = 365
# Accounts one browser remembers (a shared family computer); the oldest drops out first.
KNOWN_DEVICE_ACCOUNTS = 8
_DEVICE_SALT = "accounts.lockout.known-device"


@dataclass(frozen=True)
class Pause:
    """Why sign-in is refused and when that reason lapses."""

    reason: Reason
    until: datetime


@dataclass(frozen=True)
class _Count:
    reason: Reason
    limit: int
    attempts: list[tuple[datetime, int]]  # (attempt_time, failures) of the rows in the window

    @property
    def failures(self) -> int:
        return sum(failures for _, failures in self.attempts)

    def until(self, cool_off: timedelta) -> datetime:
        # Newest rows first: the row at which the running total reaches the limit is the
        # one whose lapse brings the total below it.
        total = 0
        for attempt_time, failures in sorted(self.attempts, reverse=True):
            total += failures
            if total >= self.limit:
                return attempt_time + cool_off
        return timezone.now()


class LockoutHandler(AxesDatabaseHandler):
    def _counts(self, request: HttpRequest, credentials: dict[str, Any] | None) -> list[_Count]:
        # get_user_attempts returns one queryset per AXES_LOCKOUT_PARAMETERS entry, in
        # order: [["username", "ip_address"], "ip_address"].
        here, client = (
            list(attempts.values_list("attempt_time", "failures_since_start"))
            for attempts in self.get_user_attempts(request, credentials)
        )
        counts = [
            _Count("client", settings.LOGIN_FAILURES_PER_CLIENT, client),
            _Count("account_here", settings.LOGIN_FAILURES_PER_ACCOUNT, here),
        ]
        username = get_client_username(request, credentials)
        if username and not is_known_device(request, username=username):
            everywhere = AccessAttempt.objects.filter(
                username=username, attempt_time__gte=get_cool_off_threshold(request)
            ).values_list("attempt_time", "failures_since_start")
            counts.append(_Count("account_elsewhere",
                                 settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS, list(everywhere)))
        return counts

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        # count * limit // own_limit reaches limit exactly when count reaches own_limit.
        limit = get_failure_limit(request, credentials)
        return max(count.failures * limit // count.limit
                   for count in self._counts(request, credentials))

    def pauses(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> list[Pause]:
        """Every count at its limit, most binding first: the network's pause leaves no way
        out but waiting; an account's pause also lifts with a password reset."""
        cool_off = get_cool_off(request) or timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)
        return [Pause(count.reason, count.until(cool_off))
                for count in self._counts(request, credentials) if count.failures >= count.limit]


def username_from_request(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str:
    """Addresses are case-insensitive: Alice@ and alice@ are one account's failures."""
    raw = (credentials or {}).get("username")
    if raw is None:
        raw = request.POST.get("username", "") if request is not None else ""
    return str(raw).strip().lower()[:254]


def client_ip(request: HttpRequest) -> str | None:
    """The client as uvicorn saw it: behind a proxy listed in TRUSTED_PROXIES, uvicorn has
    already replaced REMOTE_ADDR with the forwarded client address; anyone else's
    X-Forwarded-For is ignored, so one proxy never becomes one bucket for everyone."""
    return request.META.get("REMOTE_ADDR") or None if request is not None else None


def locked_out_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The pause page: which count paused this sign-in, for how long, and what helps.

    Axes passes (request, response, credentials) from sync code and (request, credentials)
    from async code; the credentials it recorded are on the request either way."""
    pauses = LockoutHandler().pauses(request, getattr(request, "axes_credentials", None))
    reason: Reason = pauses[0].reason if pauses else "account_here"
    until = max((pause.until for pause in pauses), default=None)
    seconds = settings.LOGIN_LOCKOUT_MINUTES * 60
    if until is not None:
        seconds = max(1, math.ceil((until - timezone.now()).total_seconds()))
    response = render(request, "accounts/locked_out.html", {
        "reason": reason, "minutes": math.ceil(seconds / 60), "until": until,
    }, status=429)
    response["Retry-After"] = str(seconds)
    return response


def _device_tag(username: str) -> str:
    # A keyed hash: the cookie names the accounts without showing their addresses.
    return salted_hmac(_DEVICE_SALT, username).hexdigest()[:20]


def _device_tags(request: HttpRequest) -> list[str]:
    value = request.get_signed_cookie(KNOWN_DEVICE_COOKIE, default="", salt=_DEVICE_SALT,
                                      max_age=timedelta(days=KNOWN_DEVICE_DAYS))
    return [tag for tag in (value or "").split(".") if tag]


def is_known_device(request: HttpRequest, *, username: str) -> bool:
    """Has this browser signed in to ``username`` before (within KNOWN_DEVICE_DAYS)?"""
    return _device_tag(username) in _device_tags(request)


def remember_device(request: HttpRequest, response: HttpResponse, *, username: str) -> None:
    """Mark this browser as one that signed in to ``username``; renewed on every sign-in."""
    tag = _device_tag(username.strip().lower())
    tags = [*(t for t in _device_tags(request) if t != tag), tag][-KNOWN_DEVICE_ACCOUNTS:]
    response.set_signed_cookie(
        KNOWN_DEVICE_COOKIE, ".".join(tags), salt=_DEVICE_SALT,
        max_age=int(timedelta(days=KNOWN_DEVICE_DAYS).total_seconds()),
        secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Lax",
    )


def forgive_account(*, username: str) -> int:
    """Forget the account's failures from every client: a completed password reset proves
    the person holds the inbox, so the new password works at once, from anywhere. A
    client's pause for guessing at many accounts stays."""
    return reset_attempts(username=username.strip().lower())
