from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        from . import disk_jobs, domain_jobs, jobs, network_jobs, snapshot_jobs  # noqa: F401  job handlers
