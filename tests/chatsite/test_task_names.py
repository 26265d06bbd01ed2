"""Task names are the wire between web and worker processes of two releases: every name
the web side sends or the beat schedules is one a worker registers."""

from __future__ import annotations

from django.conf import settings

from answers import dispatch, lifecycle
from chatsite.celery import app
from conversations import datajobs

PUBLISHED = {
    "conversations.tasks.generate_reply", "conversations.tasks.forget_background_response",
    "conversations.tasks.generate_title", "conversations.tasks.reap_stale_replies",
    "conversations.tasks.refresh_shutdown_dates", "conversations.tasks.move_orgs_off_retiring_models",
    "conversations.tasks.run_data_import", "conversations.tasks.build_data_export",
    "conversations.tasks.clean_data_jobs",
}


def test_every_scheduled_and_sent_task_is_registered_by_a_worker() -> None:
    app.loader.import_default_modules()  # what a worker does at start (autodiscovery)
    scheduled = {job["task"] for job in settings.CELERY_BEAT_SCHEDULE.values()}
    sent = {dispatch.GENERATE_REPLY, lifecycle.FORGET_RESPONSE, datajobs.RUN_IMPORT,
            datajobs.BUILD_EXPORT}
    assert scheduled | sent <= set(app.tasks)


def test_names_published_by_earlier_releases_still_reach_their_task() -> None:
    app.loader.import_default_modules()
    assert set(app.tasks) >= PUBLISHED
