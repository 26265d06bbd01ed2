"""Imports and "Export my data" as background jobs.

The web request only checks the limits, saves the upload to a private file and queues a
task with the job's id (after commit, by name: this module never imports the tasks); the worker does the work (``run_import``, ``run_export``) and
records progress on the job row, which the account page shows. A person has at most one
import and one export queued or running (a partial unique index, so no race can make
two) and starts at most ``IMPORTS_PER_DAY`` / ``EXPORTS_PER_DAY`` of each in 24 hours.

Files live under ``DATA_JOBS_DIR`` with names the server makes (``<id>-<random>``),
readable by this user only, never under a served directory. An upload is deleted when
its import ends, however it ends; a finished export can be downloaded by its owner until
it expires (``DATA_EXPORT_TTL_HOURS``), and ``clean_up`` deletes it then.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction
from chatsite.celery import app
from chatsite.errors import NotFound
from conversations import exports, imports
from conversations.access import get_membership
from conversations.models import Conversation, DataJob

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

RUN_IMPORT = "conversations.tasks.run_data_import"
BUILD_EXPORT = "conversations.tasks.build_data_export"
NOT_QUEUED = ("The background worker cannot be reached, so nothing was done. Try again in a "
              "moment.")
# A running job's row moves with every conversation; one that has not moved for this long
# lost its worker. A queued one nobody started for this long never will (broker lost it).
STALE_RUNNING = timedelta(minutes=15)
STALE_QUEUED = timedelta(hours=1)
# Finished job rows (their reports, and the count per day) are kept this long.
KEEP_ROWS = timedelta(days=30)

KIND_WORDS = {DataJob.Kind.IMPORT: ("import", "imports"), DataJob.Kind.EXPORT: ("export", "exports")}


class JobRefused(Exception):
    """The job cannot start; ``str(exc)`` says why and what to do. ``throttled``: refused
    by the per-person limits (one at a time, so many a day), not for its input."""

    def __init__(self, detail: str, *, throttled: bool = False) -> None:
        super().__init__(detail)
        self.throttled = throttled


def jobs_dir() -> Path:
    directory = Path(settings.DATA_JOBS_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def job_path(job: DataJob) -> Path:
    return jobs_dir() / job.file_name


def _private_file_name(job: DataJob, suffix: str) -> str:
    return f"{job.kind}-{job.pk}-{secrets.token_hex(16)}{suffix}"


def _per_day(kind: str) -> int:
    return settings.IMPORTS_PER_DAY if kind == DataJob.Kind.IMPORT else settings.EXPORTS_PER_DAY


def _create(*, user: User, kind: str, organization_id: int | None = None) -> DataJob:
    """A queued job, or ``JobRefused`` when one is live or the day's allowance is used."""
    one, many = KIND_WORDS[kind]  # type: ignore[index]
    since = timezone.now() - timedelta(days=1)
    recent = list(
        DataJob.objects.filter(user=user, kind=kind, created_at__gte=since)
        .order_by("created_at").values_list("created_at", flat=True)
    )
    limit = _per_day(kind)
    if len(recent) >= limit:
        again = timezone.localtime(recent[len(recent) - limit] + timedelta(days=1))
        raise JobRefused(
            f"You have started {limit} {many} in the last 24 hours, the most allowed. "
            f"You can start another after {again:%H:%M} ({again:%d %b}).",
            throttled=True,
        )
    try:
        # Race: two tabs starting at once both pass the checks above; the partial unique
        # index (one queued or running job per person and kind) lets one insert through.
        # The per-day count is safe too: a second job can only start once this one ended.
        with transaction.atomic():
            return DataJob.objects.create(user=user, kind=kind, organization_id=organization_id)
    except IntegrityError as exc:
        raise JobRefused(
            f"Your {one} is still running; wait for it to finish (this page shows its "
            f"progress), then start another.",
            throttled=True,
        ) from exc


def start_import(*, user: User, organization_id: int | None, chunks: Iterable[bytes],
                 size: int) -> DataJob:
    """Save the upload privately and queue its import into the user's current org."""
    if size > settings.IMPORT_MAX_BYTES:
        raise JobRefused(
            f"The file is larger than {settings.IMPORT_MAX_BYTES // (1024 * 1024)} MB, the "
            f"import limit. Upload only conversations.json from your ChatGPT export."
        )
    try:
        membership = get_membership(user, organization_id)
    except NotFound as exc:
        raise JobRefused("You are not in an organization to import into.") from exc
    job = _create(user=user, kind=DataJob.Kind.IMPORT, organization_id=membership.organization_id)
    job.file_name = _private_file_name(job, ".upload")
    try:
        written = _write_private(job_path(job), chunks, limit=settings.IMPORT_MAX_BYTES)
    except BaseException as exc:
        _discard(job)
        fail(job.pk, "The upload could not be saved; try again." if not isinstance(exc, JobRefused)
             else str(exc))
        raise
    job.size = written
    job.save(update_fields=["file_name", "size"])
    _queue(RUN_IMPORT, job.pk)
    audit.record(AuditAction.DATA_IMPORTED, organization=membership.organization_id, actor=user,
                 obj=job, size=written)
    return job


def _queue(task: str, job_id: int) -> None:
    """Send the job's task once its row is committed; a broker that refuses fails the
    job at once rather than leave it queued for nobody."""

    def send() -> None:
        try:
            app.send_task(task, args=[job_id], ignore_result=True)
        except Exception:
            logger.exception("could not queue %s for job %s", task, job_id)
            fail(job_id, NOT_QUEUED)

    transaction.on_commit(send)


def _write_private(path: Path, chunks: Iterable[bytes], *, limit: int) -> int:
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            written += len(chunk)
            if written > limit:
                raise JobRefused(
                    f"The file is larger than {limit // (1024 * 1024)} MB, the import limit."
                )
            out.write(chunk)
    return written


def start_export(*, user: User) -> DataJob:
    """Queue "Export my data" (the worker builds the ZIP)."""
    job = _create(user=user, kind=DataJob.Kind.EXPORT)
    _queue(BUILD_EXPORT, job.pk)
    return job


def _claim(job_id: int, kind: str) -> DataJob | None:
    now = timezone.now()
    # Race: a redelivered task, or a second worker, finds the job no longer queued.
    claimed = DataJob.objects.filter(pk=job_id, kind=kind, status=DataJob.Status.QUEUED).update(
        status=DataJob.Status.RUNNING, started_at=now, updated_at=now
    )
    if not claimed:
        return None
    return DataJob.objects.select_related("user").get(pk=job_id)


def _progress(job_id: int, done: int, total: int) -> None:
    DataJob.objects.filter(pk=job_id, status=DataJob.Status.RUNNING).update(
        done=done, total=total, updated_at=timezone.now()
    )


def _finish(job_id: int, **fields: object) -> None:
    now = timezone.now()
    DataJob.objects.filter(pk=job_id, status=DataJob.Status.RUNNING).update(
        status=DataJob.Status.DONE, finished_at=now, updated_at=now, **fields
    )


def fail(job_id: int, reason: str) -> None:
    now = timezone.now()
    DataJob.objects.filter(pk=job_id, status__in=DataJob.LIVE_STATUSES).update(
        status=DataJob.Status.FAILED, error=reason, finished_at=now, updated_at=now
    )


def _discard(job: DataJob) -> None:
    if job.file_name:
        job_path(job).unlink(missing_ok=True)


def run_import(job_id: int) -> None:
    """The worker's half of an import; returns early if the job is not queued."""
    job = _claim(job_id, DataJob.Kind.IMPORT)
    if job is None:
        return
    try:
        with job_path(job).open("rb") as upload:
            report = imports.import_chatgpt_export(
                user=job.user, organization_id=job.organization_id, upload=upload,
                size=job.size,
                progress=lambda done, total: _progress(job_id, done, total),
            )
    except imports.ImportRefused as exc:
        fail(job_id, str(exc))
    except NotFound:
        fail(job_id, "You are no longer in the organization this import was going into.")
    except Exception:
        logger.exception("import job %s failed", job_id)
        fail(job_id, "Something went wrong on our side while importing. Conversations "
                     "imported so far were kept; import the same file again to add the rest.")
    else:
        _finish(job_id, report=report.as_dict(), done=report.total, total=report.total)
    finally:
        _discard(job)


def run_export(job_id: int) -> None:
    """The worker's half of "Export my data": the ZIP built into a private file."""
    job = _claim(job_id, DataJob.Kind.EXPORT)
    if job is None:
        return
    job.file_name = _private_file_name(job, ".zip")
    DataJob.objects.filter(pk=job_id).update(file_name=job.file_name)
    path = job_path(job)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            count = exports.write_data_export(
                out, user=job.user,
                progress=lambda done, total: _progress(job_id, done, total),
            )
        size = path.stat().st_size
    except Exception:
        logger.exception("export job %s failed", job_id)
        path.unlink(missing_ok=True)
        fail(job_id, "Something went wrong on our side while building your export; start it again.")
        return
    expires = timezone.now() + timedelta(hours=settings.DATA_EXPORT_TTL_HOURS)
    _finish(job_id, size=size, done=count, total=count, expires_at=expires,
            report={"conversations": count, "filename": exports.data_export_filename()})


def export_for_download(*, user: User, job_id: int) -> tuple[DataJob, Path]:
    """The user's own finished, unexpired export and its file; ``NotFound`` otherwise,
    the same whether it is someone else's, not ready, expired or never existed. Audited in
    each of the person's orgs: the archive holds their conversations of all of them."""
    job = DataJob.objects.filter(
        pk=job_id, user=user, kind=DataJob.Kind.EXPORT, status=DataJob.Status.DONE,
        expires_at__gt=timezone.now(),
    ).first()
    if job is None or not job.file_name:
        raise NotFound("export")
    path = job_path(job)
    if not path.is_file():
        raise NotFound("export")
    audit.record_for_person(AuditAction.DATA_EXPORTED, user=user, actor=user, obj=job,
                            what="all my data", size=path.stat().st_size)
    return job, path


def latest_jobs(user: User) -> dict[str, DataJob | None]:
    """The newest import and export of the user, for the account page."""
    latest: dict[str, DataJob | None] = {}
    for kind in DataJob.Kind:
        latest[kind.value] = (
            DataJob.objects.filter(user=user, kind=kind).order_by("-created_at", "-pk").first()
        )
    return latest


def clean_up() -> dict[str, int]:
    """Expire old exports (deleting their files), fail jobs whose worker died or that
    never started, delete leftover uploads and half-written imports, forget old rows."""
    now = timezone.now()
    counts = {"expired": 0, "failed": 0, "files": 0, "rows": 0, "partial": 0}
    for job in DataJob.objects.filter(kind=DataJob.Kind.EXPORT, status=DataJob.Status.DONE,
                                      expires_at__lte=now):
        _discard(job)
        counts["expired"] += DataJob.objects.filter(pk=job.pk, status=DataJob.Status.DONE).update(
            status=DataJob.Status.EXPIRED, updated_at=now
        )
    stale = DataJob.objects.filter(status=DataJob.Status.RUNNING, updated_at__lt=now - STALE_RUNNING)
    for job_id in stale.values_list("pk", flat=True):
        fail(job_id, "The worker running this stopped before it finished. Start it again; an "
                     "import adds only what is still missing.")
        counts["failed"] += 1
    never = DataJob.objects.filter(status=DataJob.Status.QUEUED, created_at__lt=now - STALE_QUEUED)
    for job_id in never.values_list("pk", flat=True):
        fail(job_id, "This never started: the background worker is not running. Try again later.")
        counts["failed"] += 1
    # Files no live job or downloadable export owns (uploads of ended imports, exports of
    # rows already gone).
    keep = set(
        DataJob.objects.filter(status__in=DataJob.LIVE_STATUSES).values_list("file_name", flat=True)
    ) | set(
        DataJob.objects.filter(status=DataJob.Status.DONE, kind=DataJob.Kind.EXPORT)
        .values_list("file_name", flat=True)
    )
    directory = Path(settings.DATA_JOBS_DIR)
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_file() and path.name not in keep:
                path.unlink(missing_ok=True)
                counts["files"] += 1
    busy = DataJob.objects.filter(kind=DataJob.Kind.IMPORT, status__in=DataJob.LIVE_STATUSES)
    idle_users = (
        Conversation.objects.filter(import_source=imports.PARTIAL_SOURCE)
        .exclude(user_id__in=busy.values("user_id")).values_list("user_id", flat=True).distinct()
    )
    counts["partial"] = imports.forget_partial_imports(user_ids=[u for u in idle_users if u])
    counts["rows"] = DataJob.objects.filter(
        created_at__lt=now - KEEP_ROWS
    ).exclude(status__in=DataJob.LIVE_STATUSES).delete()[0]
    return counts


def status_document(job: DataJob | None) -> dict[str, object] | None:
    """What the account page's script polls for one job."""
    if job is None:
        return None
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "live": job.is_live,
    }

