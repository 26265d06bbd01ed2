"""The org audit log: who did what to which object, when, from which client, and how it
ended.

``record`` writes one entry; every layer above accounts calls it at the place the act
happens. Sign-ins, password changes and model changes are recorded by receivers
(``accounts.audit_receivers``). Entries are never changed or deleted by the product; only
``prune`` (the daily retention task) removes those older than ``AUDIT_RETENTION_DAYS``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import zoneinfo
from collections import Counter
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from auditlog.middleware import AuditlogMiddleware
from auditlog.models import LogEntry
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.audit_models import AuditAction, AuditEntry, AuditLogImmutable, AuditOutcome
from accounts.lockout import client_ip
from accounts.models import Membership, Organization, User
from chatsite.params import parse_id

__all__ = ["AuditAction", "AuditEntry", "AuditLogImmutable", "AuditOutcome", "record"]

PAGE_SIZE = 50
EXPORT_BATCH = 500
PRUNE_BATCH = 1000
# The keys ``details`` may never carry (a programming error, refused loudly in tests).
SECRET_WORDS = ("password", "token", "secret")

_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)
_password_action: ContextVar[str | None] = ContextVar("audit_password_action", default=None)


class AuditContextMiddleware(AuditlogMiddleware):
    """The request an entry is about, for ``record`` and for django-auditlog's own rows.

    Audit entries take the client address the way the lockout does
    (``accounts.lockout.client_ip``): django-auditlog's own reading believes any
    ``X-Forwarded-For`` header, which a client can forge.
    """

    def get_extra_data(self, request: HttpRequest) -> dict[str, Any]:
        user = getattr(request, "user", None)
        return {
            "remote_addr": valid_ip(client_ip(request)),
            "remote_port": None,
            "actor": user if user is not None and user.is_authenticated else None,
        }

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current_request.set(request)
        try:
            return super().__call__(request)  # type: ignore[no-any-return]
        finally:
            _current_request.reset(token)


def valid_ip(value: str | None) -> str | None:
    """A client address PostgreSQL's inet column takes, else None (a unix socket peer)."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    # django-auditlog writes "None" for an empty value; the log shows it as empty.
    return None if value == "None" else value


def _check_details(details: Mapping[str, Any]) -> None:
    for key in details:
        if any(word in key.lower() for word in SECRET_WORDS):
            raise ValueError(f"Audit details may not carry {key!r}.")


def record(action: str, *, request: HttpRequest | None = None,
           organization: Organization | int | None = None, actor: User | None = None,
           obj: Model | None = None, outcome: str = AuditOutcome.SUCCESS,
           actor_email: str = "", **details: Any) -> AuditEntry:
    """Write one audit entry and return it.

    ``request`` defaults to the one being served (``AuditContextMiddleware``); it gives the
    client address and, when ``actor`` is not named, the signed-in person. ``actor_email``
    names someone without an account (the address a failed sign-in typed). ``details``
    holds old and new values or counts: never passwords, tokens or message text.
    """
    if action not in AuditAction.values:
        raise ValueError(f"Unknown audit action {action!r}.")
    _check_details(details)
    request = request if request is not None else _current_request.get()
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            actor = user
    organization_id = organization.pk if isinstance(organization, Model) else organization
    return AuditEntry.objects.create(
        organization_id=organization_id,
        actor=actor,
        actor_email=(actor.email if actor is not None else actor_email)[:254],
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        client_ip=valid_ip(client_ip(request)) if request is not None else None,
        outcome=outcome,
        details=details,
    )


def record_for_person(action: str, *, user: User | None, **kwargs: Any) -> list[AuditEntry]:
    """``record`` once in each org ``user`` belongs to (a sign-in is about a person, and
    each of their orgs' admins see it), or once with no org for an unknown address."""
    organizations: list[int | None] = list(
        Membership.objects.filter(user_id=user.pk).values_list("organization_id", flat=True)
    ) if user is not None else []
    obj = kwargs.pop("obj", user)
    return [record(action, organization=organization_id, obj=obj, **kwargs)
            for organization_id in organizations or [None]]


@contextlib.contextmanager
def password_action(action: str) -> Iterator[None]:
    """Inside this block a saved password is recorded as ``action`` (a reset), not as a
    plain change (``audit_receivers.audit_password_change``)."""
    token = _password_action.set(action)
    try:
        yield
    finally:
        _password_action.reset(token)


def current_password_action() -> str:
    return _password_action.get() or AuditAction.PASSWORD_CHANGED


def changes_from_auditlog(changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """django-auditlog's ``{field: [old, new]}`` as ``{field: {"old": …, "new": …}}``."""
    return {field: {"old": _plain(pair[0]), "new": _plain(pair[1])}
            for field, pair in changes.items() if isinstance(pair, list | tuple)}


# django-auditlog calls these by dotted path (``mask_callable``) for the fields they mask,
# in its own rows and so in ours.
def redact_url_password(value: str) -> str:
    """An endpoint URL without the password its user part may carry."""
    parts = urlsplit(value)
    if parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def length_only(value: str) -> str:
    """Org instructions can be long and private: the log says that they changed."""
    return "" if value in ("", "None") else f"({len(value)} characters)"


# --- Reading: the org page and its downloads ---------------------------------------------


class BadFilter(ValueError):
    """A filter the page cannot apply; the text says how to fix it."""


@dataclass(frozen=True)
class AuditFilter:
    person: int | None = None
    action: str = ""
    start: dt.date | None = None  # from this day, in the org's time zone
    end: dt.date | None = None  # up to and including this day

    def as_params(self) -> dict[str, str]:
        params = {"person": str(self.person or ""), "action": self.action,
                  "from": self.start.isoformat() if self.start else "",
                  "to": self.end.isoformat() if self.end else ""}
        return {key: value for key, value in params.items() if value}


def _date(value: str, label: str) -> dt.date | None:
    if not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError as exc:
        raise BadFilter(f"“{value}” is not a date for “{label}”; use a date like 2026-12-31.") from exc


def parse_filter(params: Mapping[str, str]) -> AuditFilter:
    person = None
    if params.get("person", "").strip():
        person = parse_id(params["person"])
        if person is None:
            raise BadFilter("Choose a person from the list.")
    action = params.get("action", "").strip()
    if action and action not in AuditAction.values:
        raise BadFilter("Choose an action from the list.")
    start, end = _date(params.get("from", ""), "From"), _date(params.get("to", ""), "To")
    if start and end and start > end:
        raise BadFilter("“From” is after “To”; swap the dates.")
    return AuditFilter(person=person, action=action, start=start, end=end)


def _day_start(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=zone)


def entries_for(organization: Organization, audit_filter: AuditFilter) -> QuerySet[AuditEntry]:
    """The org's entries that pass the filter, newest first. Only ``organization``'s:
    no filter value reaches another org's rows."""
    rows = AuditEntry.objects.for_organization(organization.pk)
    if audit_filter.action:
        rows = rows.filter(action=audit_filter.action)
    if audit_filter.person is not None:
        # By the person, or about them: their account, their membership here.
        memberships = [str(pk) for pk in Membership.objects.filter(
            user_id=audit_filter.person, organization=organization).values_list("pk", flat=True)]
        rows = rows.filter(
            Q(actor_id=audit_filter.person)
            | Q(object_type=User._meta.label_lower, object_id=str(audit_filter.person))
            | Q(object_type=Membership._meta.label_lower, object_id__in=memberships)
        )
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(organization.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    if audit_filter.start:
        rows = rows.filter(at__gte=_day_start(audit_filter.start, zone))
    if audit_filter.end:
        rows = rows.filter(at__lt=_day_start(audit_filter.end + dt.timedelta(days=1), zone))
    return rows.order_by("-at", "-id")


def people_of(organization: Organization) -> list[tuple[int, str]]:
    """(user id, email) of the org's members, for the person filter."""
    return list(Membership.objects.filter(organization=organization)
                .order_by("user__email").values_list("user_id", "user__email"))


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "empty"
    if isinstance(value, dict | list):
        return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
    return str(value)


def describe(details: Mapping[str, Any]) -> str:
    """The details in one line for the page: "role: member → admin; member: bob@…"."""
    parts = []
    if "old" in details or "new" in details:
        parts.append(f"{_shown(details.get('old'))} → {_shown(details.get('new'))}")
    for key, value in details.items():
        if key in ("old", "new"):
            continue
        if key == "changes" and isinstance(value, dict):
            parts.extend(f"{field}: {_shown(change.get('old'))} → {_shown(change.get('new'))}"
                         for field, change in value.items() if isinstance(change, dict))
        else:
            parts.append(f"{key.replace('_', ' ')}: {_shown(value)}")
    return "; ".join(parts)


EXPORT_FIELDS = ["at", "person", "action", "object_type", "object_id", "outcome",
                 "client_ip", "details"]


def export_row(entry: AuditEntry) -> dict[str, Any]:
    return {"at": entry.at.isoformat(), "person": entry.actor_email, "action": entry.action,
            "object_type": entry.object_type, "object_id": entry.object_id,
            "outcome": entry.outcome, "client_ip": entry.client_ip or "",
            "details": entry.details}


def export_batch(rows: QuerySet[AuditEntry], after: tuple[dt.datetime, int] | None
                 ) -> list[AuditEntry]:
    """The next ``EXPORT_BATCH`` rows after ``after`` (the last one sent), in page order:
    keyset paging, so a large log streams in constant memory and time per batch."""
    if after is not None:
        at, pk = after
        rows = rows.filter(Q(at__lt=at) | Q(at=at, id__lt=pk))
    return list(rows[:EXPORT_BATCH])


# --- Retention --------------------------------------------------------------------------


def _delete_batch(cutoff: dt.datetime) -> list[int | None]:
    table = connection.ops.quote_name(AuditEntry._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT id, organization_id FROM {table} WHERE at < %s ORDER BY id LIMIT %s",
                       [connection.ops.adapt_datetimefield_value(cutoff), PRUNE_BATCH])
        rows = cursor.fetchall()
        if not rows:
            return []
        postgres = connection.vendor == "postgresql"
        if postgres:
            # The trigger of migration 0008 lets a DELETE through only for rows older than
            # this transaction-local setting; it is cleared again right after.
            cursor.execute("SELECT set_config('teamchat.audit_delete_before', %s, true)",
                           [cutoff.isoformat()])
        try:
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(rows))})",
                           [row[0] for row in rows])
        finally:
            if postgres:
                cursor.execute("SELECT set_config('teamchat.audit_delete_before', '', true)")
    return [row[1] for row in rows]


def prune(*, days: int | None = None, now: dt.datetime | None = None) -> dict[int | None, int]:
    """Delete entries older than ``days`` (``AUDIT_RETENTION_DAYS``) in batches, and
    django-auditlog's rows of the same age; each org gets a ``retention.run`` entry with
    its count. Returns the counts by org id."""
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    if days < 1:
        raise ValueError("Audit entries are kept at least one day.")
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    counts: Counter[int | None] = Counter()
    while batch := _delete_batch(cutoff):
        counts.update(batch)
    LogEntry.objects.filter(timestamp__lt=cutoff).delete()
    for organization_id, deleted in counts.items():
        record(AuditAction.RETENTION_RUN, organization=organization_id, request=None,
               what="audit_log", deleted=deleted, older_than_days=days, before=cutoff)
    return dict(counts)
