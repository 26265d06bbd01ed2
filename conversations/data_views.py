"""Getting conversations in and out: Export (one conversation), the account page with
"Export my data" and "Import" (a ChatGPT export)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import IO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from conversations.access import get_conversation_for_user, get_membership
from conversations.exceptions import NotFound
from conversations.exports import build_data_export, data_export_filename, export_conversation
from conversations.imports import ImportRefused, import_chatgpt_export

REPORT_SESSION_KEY = "import_report"
ARCHIVE_CHUNK_BYTES = 256 * 1024


@login_required
@require_GET
def conversation_export(request: HttpRequest, conversation_id: int, fmt: str) -> HttpResponse:
    try:
        conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    except NotFound as exc:
        raise Http404("No such conversation") from exc
    export = export_conversation(conversation=conversation, fmt=fmt)
    response = HttpResponse(export.body, content_type=export.content_type)
    response["Content-Disposition"] = content_disposition_header(True, export.filename) or ""
    response["Cache-Control"] = "private, no-store"
    return response


def _account_page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    try:
        membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    except NotFound:
        membership = None
    return render(
        request,
        "accounts/account.html",
        {
            "membership": membership,
            "organization": membership.organization if membership else None,
            "report": request.session.pop(REPORT_SESSION_KEY, None),
            "import_error": error,
            "import_max_mb": settings.IMPORT_MAX_BYTES // (1024 * 1024),
        },
        status=status,
    )


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    return _account_page(request)


async def _read_in_chunks(archive: IO[bytes]) -> AsyncIterator[bytes]:
    """Async, so the ASGI handler streams it: given a sync iterator (FileResponse) it
    would first read the whole archive into a list in memory."""
    read = sync_to_async(archive.read)
    try:
        while chunk := await read(ARCHIVE_CHUNK_BYTES):
            yield chunk
    finally:
        await sync_to_async(archive.close)()


@login_required
@require_GET
def export_my_data(request: HttpRequest) -> StreamingHttpResponse:
    archive = build_data_export(user=request.user)  # type: ignore[arg-type]
    size = archive.seek(0, io.SEEK_END)
    archive.seek(0)
    response = StreamingHttpResponse(_read_in_chunks(archive), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, data_export_filename()) or ""
    response["Content-Length"] = str(size)
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_POST
def import_conversations(request: HttpRequest) -> HttpResponse:
    # Refuse an oversized body before Django reads it into a temporary file.
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    # The multipart envelope adds a little to the file itself.
    if declared > settings.IMPORT_MAX_BYTES + 64 * 1024:
        return _account_page(
            request,
            error=f"The file is larger than {settings.IMPORT_MAX_BYTES // (1024 * 1024)} MB, the "
            f"import limit. Upload only conversations.json from your ChatGPT export.",
            status=413,
        )
    upload = request.FILES.get("file")
    if upload is None:
        return _account_page(
            request, error="Choose your ChatGPT export (conversations.json or its ZIP) first.",
            status=400,
        )
    try:
        report = import_chatgpt_export(
            user=request.user,  # type: ignore[arg-type]
            organization_id=request.session.get("organization_id"),
            upload=upload,
            size=upload.size or 0,
        )
    except ImportRefused as exc:
        return _account_page(request, error=f"Nothing was imported. {exc}", status=400)
    except NotFound:
        return _account_page(request, error="You are not in an organization to import into.",
                             status=400)
    request.session[REPORT_SESSION_KEY] = report.as_dict()
    return redirect("conversations:account")
