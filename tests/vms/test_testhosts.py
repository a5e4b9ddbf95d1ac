"""A restarted demo: each test host's node file is written again from the inventory, and the
host must then agree with what the portal and its queued jobs expect (issue 7, item 13)."""

import threading

import pytest
from django.db import connections
from factories import DiskFactory, HostFactory, StorageDomainFactory, VMFactory
from helpers import GiB

import hypervisor
from portal.kernel.models import Event, Job, JobStatus, Phase
from vms import services, testhosts
from vms.choices import HostStatus, VMStatus
from vms.models import Host, VirtualMachine
from vms.monitor import Monitor, host_unreachable

pytestmark = pytest.mark.django_db


def status_of(vm) -> str:
    return VirtualMachine.objects.values_list("status", flat=True).get(pk=vm.pk)


def restart(host) -> hypervisor.Connection:
    """What a restarted monitor process does first: write the node file, then connect."""
    hypervisor.disconnect(host.uri)
    testhosts.node_file_write(host)
    return hypervisor.connect(host.uri)


def test_a_queued_creation_still_succeeds_after_a_restart(
    admin, sync_hosts, work_off, django_capture_on_commit_callbacks
):
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    sync_hosts(host)
    with django_capture_on_commit_callbacks(execute=True):
        vm = services.vm_create(
            user=admin,
            name="made-later",
            cluster_id=host.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
    disk = vm.disks.get()
    conn = restart(host)  # the job is still queued
    assert disk.volume_name not in {v.name for v in conn.list_volumes(domain.pool_name)}
    assert str(vm.uuid) not in {d.uuid for d in conn.list_domains()}

    work_off()
    job = Job.objects.get(kind="vm_create")
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, "")
    assert status_of(vm) == VMStatus.DOWN
    assert conn.get_volume(domain.pool_name, disk.volume_name).capacity == GiB
    assert conn.get_domain(str(vm.uuid)).name == "made-later"


@pytest.mark.parametrize(
    ("before", "action", "after"),
    [
        (VMStatus.DOWN, services.vm_run, VMStatus.UP),
        (VMStatus.PAUSED, services.vm_run, VMStatus.UP),
        (VMStatus.SUSPENDED, services.vm_run, VMStatus.UP),
        (VMStatus.UP, services.vm_suspend, VMStatus.SUSPENDED),
    ],
)
def test_a_queued_action_finds_the_vm_as_it_was_after_a_restart(
    admin, make_vm, work_off, django_capture_on_commit_callbacks, before, action, after
):
    vm = make_vm(status=before)
    with django_capture_on_commit_callbacks(execute=True):
        job = action(vm_id=vm.pk, user=admin)
    restart(vm.host)  # the VM shows its busy status; the host has not been touched yet
    work_off()
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, "")
    assert status_of(vm) == after
    assert not Event.objects.filter(job=job, phase=Phase.FAILED).exists()


def test_unknown_vms_come_back_as_they_were_after_a_restart(make_vm):
    host = HostFactory()
    StorageDomainFactory(data_center=host.cluster.data_center)
    vms = {
        status: make_vm(status=status, host=host)
        for status in (VMStatus.UP, VMStatus.PAUSED, VMStatus.SUSPENDED, VMStatus.DOWN)
    }
    host_unreachable(host, "The host did not answer.", set())
    assert {status_of(vm) for s, vm in vms.items() if s != VMStatus.DOWN} == {VMStatus.UNKNOWN}

    hypervisor.disconnect(host.uri)
    monitor = testhosts.TestHostMonitor(poll_seconds=60, stale_seconds=30)
    monitor.pool.shutdown()
    try:
        monitor.host_poll(host, set())  # a new monitor process: writes the node file first
    finally:
        monitor.stop.set()
    assert {s: status_of(vm) for s, vm in vms.items()} == {s: s for s in vms}


@pytest.mark.django_db(transaction=True)
def test_the_node_file_is_written_from_one_view_of_the_inventory(monkeypatch):
    """A VM removed while its host's node file is being written: the file holds the VM and its
    disk, or neither, never a disk without its VM."""
    vm = VMFactory(status=VMStatus.DOWN)
    disk = DiskFactory(vm=vm)
    make_pool = testhosts.TestPool

    def removed_meanwhile(**fields):
        # The pool's volumes (the disks) are read by now, the VMs not yet.
        def remove():
            disk.delete()
            VirtualMachine.objects.filter(pk=vm.pk).delete()
            connections.close_all()

        thread = threading.Thread(target=remove)
        thread.start()
        thread.join(10)
        return make_pool(**fields)

    monkeypatch.setattr(testhosts, "TestPool", removed_meanwhile)
    xml = testhosts.node_xml(vm.host)
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()  # it was removed meanwhile
    assert (disk.volume_name in xml) == (str(vm.uuid) in xml)


def test_only_the_test_host_monitor_writes_node_files(make_vm):
    """The production monitor knows nothing of node files: a test host whose file is missing
    does not answer it. The demo's monitor writes the file once, before its first connection."""
    host = HostFactory()
    StorageDomainFactory(data_center=host.cluster.data_center)
    vm = make_vm(status=VMStatus.UP, host=host)
    path = testhosts.node_file(host)
    hypervisor.disconnect(host.uri)
    path.unlink()

    plain = Monitor(poll_seconds=60, stale_seconds=30)
    plain.pool.shutdown()
    plain.host_poll(host, set())
    assert not path.exists()
    assert Host.objects.get(pk=host.pk).status == HostStatus.NON_RESPONSIVE

    demo = testhosts.TestHostMonitor(poll_seconds=60, stale_seconds=30)
    demo.pool.shutdown()
    assert demo.prepare() >= 1  # every test host, up front
    assert path.exists()
    assert demo.prepare() == 0  # once per process
    host.refresh_from_db()
    demo.host_poll(host, set())
    assert Host.objects.get(pk=host.pk).status == HostStatus.UP
    assert status_of(vm) == VMStatus.UP
