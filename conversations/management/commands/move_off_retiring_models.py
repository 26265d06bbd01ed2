"""``manage.py move_off_retiring_models``: what Celery beat runs daily, on demand."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.retirements import move_orgs_off_retiring_models


class Command(BaseCommand):
    help = (
        "From the day before a model's shutdown, make its catalog successor the default model "
        "of every org whose default it is, and notify each org's admins. Running it twice "
        "changes nothing more."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--today", metavar="YYYY-MM-DD",
            help="Act as if today were this date (default: today in TIME_ZONE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        today = None
        if options["today"]:
            try:
                today = dt.date.fromisoformat(options["today"])
            except ValueError as exc:
                raise CommandError(f"--today {options['today']!r} is not a date (YYYY-MM-DD)") from exc
        moves = move_orgs_off_retiring_models(today=today)
        for move in moves:
            if move.new is None:
                self.stderr.write(f"Org {move.organization_id} stays on {move.old}: no usable "
                                  "successor profile. Add one, or pick another default model.")
            else:
                self.stdout.write(f"Org {move.organization_id}: {move.old} -> {move.new}")
        if not moves:
            self.stdout.write("No org's default model is about to shut down.")
