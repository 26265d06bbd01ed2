"""Getting conversations in and out: Export (one conversation, here and now), and the
account page with "Export my data" and "Import" (a ChatGPT export), which run as
background jobs (conversations/datajobs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.audit_models import AuditAction
from chatsite.errors import NotFound
from conversations import datajobs
from conversations.access import get_conversation_for_user, get_membership
from conversations.exports import data_export_filename, export_conversation
from conversations.models import DataJob

ARCHIVE_CHUNK_BYTES = 256 * 1024


@login_required
@require_GET
def conversation_export(request: HttpRequest, conversation_id: int, fmt: str) -> HttpResponse:
    try:
        conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    except NotFound as exc:
        raise Http404("No such conversation") from exc
    export = export_conversation(conversation=conversation, fmt=fmt)
    audit.record(AuditAction.DATA_EXPORTED, organization=conversation.organization_id,
                 obj=conversation, what="one conversation", format=fmt)
    response = HttpResponse(export.body, content_type=export.content_type)
    response["Content-Disposition"] = content_disposition_header(True, export.filename) or ""
    response["Cache-Control"] = "private, no-store"
    return response


def _account_page(request: HttpRequest, *, error: str = "", export_error: str = "",
                  status: int = 200) -> HttpResponse:
    try:
        membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    except NotFound:
        membership = None
    latest = datajobs.latest_jobs(request.user)  # type: ignore[arg-type]
    return render(
        request,
        "accounts/account.html",
        {
            "membership": membership,
            "organization": membership.organization if membership else None,
            "import_job": latest[DataJob.Kind.IMPORT],
            "export_job": latest[DataJob.Kind.EXPORT],
            "import_error": error,
            "export_error": export_error,
            "import_max_mb": settings.IMPORT_MAX_BYTES // (1024 * 1024),
            "imports_per_day": settings.IMPORTS_PER_DAY,
            "exports_per_day": settings.EXPORTS_PER_DAY,
            "export_ttl_hours": settings.DATA_EXPORT_TTL_HOURS,
        },
        status=status,
    )


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    return _account_page(request)


@login_required
@require_GET
def data_jobs(request: HttpRequest) -> JsonResponse:
    """The newest import and export and their progress, polled by the account page."""
    latest = datajobs.latest_jobs(request.user)  # type: ignore[arg-type]
    response = JsonResponse({kind: datajobs.status_document(job) for kind, job in latest.items()})
    response["Cache-Control"] = "private, no-store"
    return response


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
@require_POST
def export_my_data(request: HttpRequest) -> HttpResponse:
    """Start building "Export my data" in a worker; the account page shows its progress
    and then the download link."""
    try:
        datajobs.start_export(user=request.user)  # type: ignore[arg-type]
    except datajobs.JobRefused as exc:
        return _account_page(request, export_error=str(exc), status=429)
    return redirect("conversations:account")


@login_required
@require_GET
def latest_export(request: HttpRequest) -> HttpResponse:
    """The old address of "Export my data": the newest ready export, or the account page."""
    job = datajobs.latest_jobs(request.user)[DataJob.Kind.EXPORT]  # type: ignore[arg-type]
    if job is not None and job.status == DataJob.Status.DONE:
        return redirect("conversations:download_export", job_id=job.pk)
    return redirect("conversations:account")


@login_required
@require_GET
def download_export(request: HttpRequest, job_id: int) -> StreamingHttpResponse:
    try:
        job, path = datajobs.export_for_download(user=request.user, job_id=job_id)  # type: ignore[arg-type]
    except NotFound as exc:
        raise Http404("No such export") from exc
    archive = path.open("rb")
    response = StreamingHttpResponse(_read_in_chunks(archive), content_type="application/zip")
    filename = job.report.get("filename") or data_export_filename(now=job.finished_at)
    response["Content-Disposition"] = content_disposition_header(True, filename) or ""
    response["Content-Length"] = str(path.stat().st_size)
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
        datajobs.start_import(
            user=request.user,  # type: ignore[arg-type]
            organization_id=request.session.get("organization_id"),
            chunks=upload.chunks(),
            size=upload.size or 0,
        )
    except datajobs.JobRefused as exc:
        return _account_page(request, error=f"Nothing was imported. {exc}",
                             status=429 if exc.throttled else 400)
    return redirect("conversations:account")
