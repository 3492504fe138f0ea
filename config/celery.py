"""The Celery application: `celery -A config worker` and `celery -A config beat`."""

import os
from functools import cached_property
from typing import Any

from celery import Celery

from config.env import check_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Load the settings while `celery -A config` imports the app: a bad one stops the
# worker or beat with one line naming it. Read later, inside Celery's start-up, it
# would surface as a traceback through Celery's and Django's frames.
check_settings()
# Celery's Django fixup runs Django's system checks when a worker starts, and the URL
# checks import the whole URLconf: every view, the API schema generator and, through
# them, libraries a worker never uses (~70 MiB of the idle worker). The checks run
# where they belong: `manage.py migrate`/`check` at deploy time and in the tests.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")


class SlipwayCelery(Celery):
    """Celery with one result backend for every thread, and a beat without Django.

    Results are disabled, but Celery still builds a backend per thread, scanning
    every installed package's entry points each time (~13 ms). Under ASGI each web
    request runs in a new thread, so that cost landed on every webhook.
    """

    # A subclass counts as "custom task class" to Celery's Django fixup, so name
    # Django's task class (delay_on_commit, connection handling) here.
    task_cls = "celery.contrib.django.task:DjangoTask"

    @cached_property
    def backend(self):  # type: ignore[override]
        return self._get_backend()

    @cached_property
    def Beat(self) -> Any:  # noqa: N802 - Celery's name
        """Return beat's application class: a scheduler that never sets Django up.

        Beat only reads the schedule (plain settings) and sends each entry by task
        name; it runs no task and touches no model. Celery's default beat imports the
        task modules first, and with them django.setup(), every app, the admin and
        the engine: ~150 MiB for a process that sends five messages a minute. Ours
        skips that import and stays at the size of Celery and the settings.
        """
        from celery.apps.beat import Beat

        class SchedulerOnlyBeat(Beat):  # type: ignore[misc]
            def init_loader(self) -> None:
                # No loader.init_worker(): it would send import_modules, on which
                # Django's fixup calls django.setup() and autodiscovery imports
                # every tasks module. Entries go out through send_task by name.
                self.app.finalize()

        return self.subclass_with_self(SchedulerOnlyBeat)


app = SlipwayCelery("slipway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
