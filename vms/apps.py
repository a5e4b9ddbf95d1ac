from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        from . import (  # noqa: F401  job handlers, and the Event of an ISO image that goes
            cdrom,
            cdrom_jobs,
            disk_jobs,
            domain_jobs,
            iso_jobs,
            jobs,
            migration_jobs,
            network_jobs,
            snapshot_jobs,
        )
