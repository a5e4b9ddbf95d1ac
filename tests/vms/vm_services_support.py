"""Helpers shared by the modules split out of test_vm_services.py."""

from django.utils.module_loading import import_string
from factories import DiskFactory, VMFactory
from rq import Queue

from portal.kernel.models import Event, Job
from storage.models import Disk
from vms.actions import VM_STATUS_ACTIONS, VMAction
from vms.choices import VMOrigin
from vms.models import VirtualMachine


def call_action(action: str, vm: VirtualMachine, user, **kwargs):
    """Call the service the catalogue names for `action` on `vm` (Clone VM under a fresh name)."""
    if action == VMAction.CLONE:
        kwargs.setdefault("clone_name", f"{vm.name}-copy")
    if action == VMAction.IMPORT:
        kwargs.setdefault("name", vm.name)
    if action == VMAction.RUN_ONCE:
        kwargs.setdefault("boot_sequence", "hd,cdrom,network")
    return import_string(VM_STATUS_ACTIONS[action].service)(vm_id=vm.pk, user=user, **kwargs)


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


def vm_for(action: str, **fields) -> VirtualMachine:
    """A VM with a disk that `action` may act on by its kind: one defined outside Vireo for an
    action only such VMs have (Import), else one of Vireo's."""
    if VM_STATUS_ACTIONS[action].external:
        fields.setdefault("origin", VMOrigin.EXTERNAL)
    vm = VMFactory(**fields)
    DiskFactory(vm=vm)
    return vm
