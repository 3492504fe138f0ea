"""Validate a .slipway.yml without running it."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pipelines.engine import spec


class Command(BaseCommand):
    help = "Validate a pipeline file; print every problem with its line and column."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("file", help="Path to a .slipway.yml")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        path = Path(options["file"])
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            pipeline = spec.parse(text, filename=path.name)
        except spec.SpecError as exc:
            self.stderr.write(str(exc))
            raise CommandError(f"{path}: {len(exc.issues)} problem(s)") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{path}: valid — {len(pipeline.stages)} stages, {len(pipeline.jobs)} jobs"
            )
        )
