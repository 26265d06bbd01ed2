"""``manage.py sync_models``: profiles from the model catalog and the provider's listing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from llm.catalog.sync import sync_models


class Command(BaseCommand):
    help = (
        "Create and update model profiles from the catalog (fields an admin changed are left "
        "alone), record which models the provider's GET /v1/models lists, add unknown ones as "
        "'discovered', and set up the Azure deployment named by the environment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-listing", action="store_true",
            help="Do not call the provider's GET /v1/models (catalog only).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_models(with_listing=not options["no_listing"])
        write = self.stdout.write
        write(f"Created: {', '.join(report.created) or 'none'}")
        for name, fields in report.updated.items():
            write(f"Updated {name}: {', '.join(fields)}")
        for name, fields in report.kept.items():
            write(f"Kept admin edits on {name}: {', '.join(fields)}")
        for name, why in report.skipped.items():
            write(f"Skipped {name}: {why}")
        if report.listing_error:
            self.stderr.write(f"Could not list the provider's models: {report.listing_error}")
        elif not options["no_listing"]:
            write(f"Listed by the provider: {', '.join(report.listed) or 'none'}")
            write(
                f"Discovered (set their prices in the admin to use them): "
                f"{', '.join(report.discovered) or 'none'}"
            )
