"""Helpers shared by the modules split out of test_monitor.py."""

from concurrent.futures import Future
from datetime import timedelta

from django.utils import timezone
from factories import DiskFactory, VMFactory

from portal.kernel.models import Event, Job, Phase
from vms.choices import VMStatus
from vms.models import Host, VirtualMachine

OLD = timedelta(hours=1)


class InlineExecutor:
    """Polls hosts in the calling thread, so they see the test's transaction."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def vm_on_host(sync_hosts, status=VMStatus.UP, host=None, **fields) -> VirtualMachine:
    vm = VMFactory(status=status, **({"host": host} if host else {}), **fields)
    DiskFactory(vm=vm)
    sync_hosts(vm.host)
    return vm


def status_of(vm) -> str:
    return VirtualMachine.objects.values_list("status", flat=True).get(pk=vm.pk)


def host_status(host) -> str:
    return Host.objects.values_list("status", flat=True).get(pk=host.pk)


def detected(vm) -> list[str]:
    return list(
        Event.objects.filter(vm=vm, phase=Phase.DETECTED)
        .order_by("id")
        .values_list("message", flat=True)
    )


def age(job: Job, **fields) -> None:
    """Make a job (and its VM's busy status) look old."""
    then = timezone.now() - OLD
    Job.objects.filter(pk=job.pk).update(created_at=then, **fields)
    VirtualMachine.objects.filter(pk=job.vm_id).update(status_changed_at=then)
