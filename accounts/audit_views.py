"""The org's audit log page, ``/org/audit/``: owners and admins only, filtered by person,
action and dates, paginated, and downloadable as CSV or JSON of the same filter.

Who may see it is decided as on every org admin page (``org_views.page_admin``): a
member, or anyone naming another org, gets a 404.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from accounts import audit
from accounts.audit_models import AuditAction, AuditEntry
from accounts.org_views import page_admin

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
# A spreadsheet runs a cell that starts with one of these as a formula; a failed sign-in's
# typed address is the attacker's text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _csv_lines(rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[_cell(value) for value in row] for row in rows])
    return buffer.getvalue().encode()


async def _download(rows: QuerySet[AuditEntry], fmt: str) -> AsyncIterator[bytes]:
    """Async, so the ASGI handler streams it batch by batch (a sync iterator it would
    first read whole into memory)."""
    fetch = sync_to_async(audit.export_batch)
    after = None
    if fmt == "csv":
        yield _csv_lines([audit.EXPORT_FIELDS])
    else:
        yield b"["
    separator = b"\n"
    while batch := await fetch(rows, after):
        exported = [audit.export_row(entry) for entry in batch]
        if fmt == "csv":
            yield _csv_lines([[*(row[field] for field in audit.EXPORT_FIELDS[:-1]),
                               json.dumps(row["details"], cls=DjangoJSONEncoder)]
                              for row in exported])
        else:
            for row in exported:
                yield separator + json.dumps(row, cls=DjangoJSONEncoder).encode()
                separator = b",\n"
        after = (batch[-1].at, batch[-1].pk)
        if len(batch) < audit.EXPORT_BATCH:
            break
    if fmt == "json":
        yield b"\n]\n"


def _download_response(rows: QuerySet[AuditEntry], fmt: str,
                       organization_id: int) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_download(rows, fmt), content_type=FORMATS[fmt])
    filename = f"audit-org{organization_id}-{timezone.now():%Y-%m-%d}.{fmt}"
    response["Content-Disposition"] = content_disposition_header(True, filename) or ""
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    admin = page_admin(request)
    organization = admin.organization
    fmt = request.GET.get("format", "")
    error = ""
    try:
        audit_filter = audit.parse_filter(request.GET)
        if fmt and fmt not in FORMATS:
            raise audit.BadFilter("Download as csv or json.")
    except audit.BadFilter as exc:
        if fmt:
            return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
        audit_filter, error = audit.AuditFilter(), str(exc)
    rows = audit.entries_for(organization, audit_filter)
    if fmt:
        return _download_response(rows, fmt, organization.pk)
    page = Paginator(rows, audit.PAGE_SIZE).get_page(request.GET.get("page"))
    params = audit_filter.as_params()
    return render(request, "org/audit.html", {
        "admin": admin,
        "organization": organization,
        "section": "audit",
        "page": page,
        "entries": [(entry, audit.describe(entry.details)) for entry in page],
        "filter": audit_filter,
        "filter_params": params,
        # The filter as a query string, for the page links and the downloads.
        "query": urlencode({"org": organization.pk, **params}),
        "people": audit.people_of(organization),
        "actions": AuditAction.choices,
        "error": error,
    }, status=400 if error else 200)
