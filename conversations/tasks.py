"""Thin Celery wrappers for conversation data: ids in, one domain call, nothing returned."""

from __future__ import annotations

from celery import shared_task

from conversations import datajobs, retirements


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
