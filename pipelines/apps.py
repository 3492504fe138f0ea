from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    verbose_name = "Pipelines"

    def ready(self) -> None:
        # The kubernetes executor needs a stored cluster, so the Django side
        # registers its factory; the delivery tasks must exist in every worker.
        # The webhook task module (not named tasks.py, so autodiscovery skips it),
        # which also connects the repository cache's save signals.
        from . import (  # noqa: F401
            delivery_tasks,
            hook_tasks,  # noqa: F401
            k8s_executor,
        )

        k8s_executor.register()
