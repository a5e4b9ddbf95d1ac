from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"

    def ready(self) -> None:
        from . import jobs  # noqa: F401  registers the job handlers
