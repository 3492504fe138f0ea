"""The Celery application: `celery -A config worker` and `celery -A config beat`."""

import os
from functools import cached_property

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class SlipwayCelery(Celery):
    """Celery with one result backend for every thread.

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


app = SlipwayCelery("slipway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
