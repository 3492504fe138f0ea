from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    verbose_name = "Pipelines"

    def ready(self) -> None:
        # The kubernetes executor needs a stored cluster, so the Django side
        # registers its factory; the delivery tasks must exist in every worker.
        from . import delivery_tasks, k8s_executor  # noqa: F401

        k8s_executor.register()
