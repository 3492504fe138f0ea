"""First-run setup: an admin user, the demo repository and its first run.

Safe to run on every start (``platform/run.sh`` and the container's ``migrate`` do):
each part happens once per installation. The audit log remembers that it did, so a
demo repository someone deleted is not made again on the next start.
"""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core import audit
from core.models import AuditEvent
from pipelines import services
from pipelines.demo import create_demo_repository
from pipelines.models import Repository

ADMIN_ACTION = "bootstrap.admin"
DEMO_ACTION = "bootstrap.demo"


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
        """Create the first admin unless a superuser exists; show the password once."""
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("SLIPWAY_ADMIN_USER") or "admin"
        if User.objects.filter(username=username).exists():
            raise CommandError(
                f"SLIPWAY_ADMIN_USER: a user {username!r} exists but no superuser "
                "does; make one with `manage.py createsuperuser`"
            )
        given = os.environ.get("SLIPWAY_ADMIN_PASSWORD", "")
        password = given or secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.create_superuser(
                username, f"{username}@localhost", password
            )
            user.groups.add(Group.objects.get_or_create(name="admin")[0])
            audit.record(
                ADMIN_ACTION,
                target=user,
                source=AuditEvent.Source.SYSTEM,
                details={"password": "environment" if given else "generated"},
            )
        # The generated password exists only here: it is never stored in clear, so
        # this is the one time anybody can read it.
        shown = "(from SLIPWAY_ADMIN_PASSWORD)" if given else password
        self.stdout.write(
            self.style.SUCCESS(
                "\n  Slipway admin login (shown once):\n"
                f"    user:     {username}\n    password: {shown}\n"
            )
        )

    def _demo(self) -> None:
        """Create and connect the demo repository, then queue its first run."""
        done_before = AuditEvent.objects.filter(action=DEMO_ACTION).exists()
        if done_before or Repository.objects.filter(name="demo").exists():
            return
        path = create_demo_repository(settings.VAR_DIR / "demo-repo")
        with transaction.atomic():
            repository = Repository.objects.create(
                name="demo",
                description="The demo repository made on first start",
                clone_url=str(path),
                default_branch="main",
                poll_interval=30,
            )
            audit.record(
                DEMO_ACTION,
                target=repository,
                source=AuditEvent.Source.SYSTEM,
                details={"clone_url": repository.clone_url},
            )
            # Queued after commit: a worker must find the repository row.
            run = services.trigger_run(repository, trigger="manual", ref="main")
        self.stdout.write(f"  demo repository at {path}; run #{run.number} queued\n")
