"""First-run setup: an admin user, the demo repository and its first run."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand

from pipelines import services
from pipelines.demo import create_demo_repository
from pipelines.models import Repository


class Command(BaseCommand):
    help = "Create the admin user and the demo repository on a fresh installation."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--no-demo", action="store_true", help="Skip the demo repository."
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        self._admin()
        if not options["no_demo"]:
            self._demo()

    def _admin(self) -> None:
        username = os.environ.get("SLIPWAY_ADMIN_USER", "admin")
        if User.objects.filter(is_superuser=True).exists():
            return
        password = os.environ.get("SLIPWAY_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(
            username, f"{username}@localhost", password
        )
        user.groups.add(Group.objects.get_or_create(name="admin")[0])
        shown = (
            "(from SLIPWAY_ADMIN_PASSWORD)"
            if "SLIPWAY_ADMIN_PASSWORD" in os.environ
            else password
        )
        self.stdout.write(
            self.style.SUCCESS(
                "\n  Slipway admin login (shown once):\n"
                f"    user:     {username}\n    password: {shown}\n"
            )
        )

    def _demo(self) -> None:
        if Repository.objects.filter(name="demo").exists():
            return
        path = create_demo_repository(settings.VAR_DIR / "demo-repo")
        repository = Repository.objects.create(
            name="demo",
            description="The demo repository made on first start",
            clone_url=str(path),
            default_branch="main",
            poll_interval=30,
        )
        run = services.trigger_run(repository, trigger="manual", ref="main")
        self.stdout.write(f"  demo repository at {path}; run #{run.number} queued\n")
