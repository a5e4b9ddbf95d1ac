from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        from . import (  # noqa: F401  job handlers
            disk_jobs,
            domain_jobs,
            iso_jobs,
            jobs,
            network_jobs,
            snapshot_jobs,
        )
