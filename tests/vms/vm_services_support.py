"""Helpers shared by the modules split out of test_vm_services.py."""

from rq import Queue

from portal.kernel.models import Event, Job
from storage.models import Disk
from vms import services
from vms.choices import (
    VMAction,
)
from vms.models import VirtualMachine


def call_action(action: str, vm: VirtualMachine, user, **kwargs):
    """Call the service for `action` on `vm` (Clone VM under a fresh name)."""
    if action == VMAction.REMOVE:
        return services.vm_remove(vm_id=vm.pk, user=user, **kwargs)
    if action == VMAction.CLONE:
        return services.vm_clone(vm_id=vm.pk, user=user, clone_name=f"{vm.name}-copy", **kwargs)
    service = {
        VMAction.RUN: services.vm_run,
        VMAction.SHUTDOWN: services.vm_shutdown,
        VMAction.POWER_OFF: services.vm_poweroff,
        VMAction.SUSPEND: services.vm_suspend,
        VMAction.REBOOT: services.vm_reboot,
    }[action]
    return service(vm_id=vm.pk, user=user, **kwargs)


def snapshot(vm: VirtualMachine) -> tuple:
    """What a refused request must leave unchanged."""
    vm.refresh_from_db()
    return (
        vm.status,
        vm.status_changed_at,
        Job.objects.count(),
        Event.objects.count(),
        VirtualMachine.objects.count(),
        sorted(Disk.objects.values_list("pk", "status")),
    )


def closed_queue() -> Queue:
    """A queue on a Redis that is not there."""
    from redis import Redis

    return Queue("default", connection=Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1))
