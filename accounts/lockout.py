"""Sign-in lockout on django-axes: per account and per client, each with its own limit.

Axes compares one failure count with one limit; this handler counts failures per
account and per client address separately and scales the client's count so that
``LOGIN_FAILURES_PER_CLIENT`` failures from one address reach the same limit as
``LOGIN_FAILURES_PER_ACCOUNT`` failures for one account.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class LockoutHandler(AxesDatabaseHandler):
    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        # get_user_attempts returns one queryset per AXES_LOCKOUT_PARAMETERS entry, in
        # order: ["username", "ip_address"].
        by_account, by_client = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        per_account = settings.LOGIN_FAILURES_PER_ACCOUNT
        per_client = settings.LOGIN_FAILURES_PER_CLIENT
        client_scaled = by_client * per_account // per_client
        return max(by_account, client_scaled)


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


def locked_out_response(request: HttpRequest, credentials: dict[str, Any] | None = None,
                        *args: Any, **kwargs: Any) -> HttpResponse:
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    response = render(request, "accounts/locked_out.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
