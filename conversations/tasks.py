"""Thin Celery wrappers for conversation data: ids in, one domain call, nothing returned."""

from __future__ import annotations

from celery import shared_task

from conversations import datajobs, retention, retirements, search


@shared_task(ignore_result=True)
def move_orgs_off_retiring_models() -> None:
    retirements.move_orgs_off_retiring_models()


# Imports and exports: one job each, ids only. A redelivered task finds its job no
# longer queued and returns; a job whose worker died is failed by clean_data_jobs.
@shared_task(ignore_result=True)
def run_data_import(job_id: int) -> None:
    datajobs.run_import(job_id)


@shared_task(ignore_result=True)
def build_data_export(job_id: int) -> None:
    datajobs.run_export(job_id)


@shared_task(ignore_result=True)
def clean_data_jobs() -> None:
    datajobs.clean_up()


# Daily: each org's conversations untouched for its retention period deleted in batches,
# each org's run audited. Not retried: the next day's run takes what this one left.
@shared_task(name="conversations.tasks.apply_retention", ignore_result=True)
def apply_retention() -> None:
    retention.apply_retention()


# Every few seconds: the search vectors of the messages whose text became final since
# (a search computes the few still queued itself, so it is never behind).
@shared_task(name="conversations.tasks.index_messages", ignore_result=True)
def index_messages() -> None:
    search.index_messages()
