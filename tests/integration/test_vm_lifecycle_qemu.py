"""Vireo end to end on a real libvirtd with qemu: services, an RQ worker, jobs and the monitor.

VMs have no OS (SeaBIOS idles), so the guest ignores ACPI: a graceful Shutdown must fail and
leave the VM Up. Every domain and volume a test makes is removed afterwards, pass or fail.
"""

import subprocess
import threading
import time

import pytest
from django.db import connection
from factories import ClusterFactory, HostFactory, StorageDomainFactory
from helpers import MiB

from hypervisor import DomainNotFound, DomainState, VolumeNotFound
from portal.kernel.models import Event, Job, JobStatus, Phase
from storage.choices import DiskStatus
from storage.models import Disk
from vms.choices import HostStatus, SnapshotStatus, VMStatus
from vms.disks import disk_remove
from vms.models import Host, VirtualMachine
from vms.monitor import Monitor
from vms.services import (
    vm_clone,
    vm_create,
    vm_poweroff,
    vm_remove,
    vm_run,
    vm_shutdown,
    vm_suspend,
)
from vms.snapshots import snapshot_create, snapshot_delete, snapshot_preview, snapshot_undo

# Transactional: the monitor's thread must see what the test and the worker commit.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SHUTDOWN_TIMEOUT = 2  # below cluster_update's minimum: set on the row, to keep the test short


def virsh(uri: str, *args: str) -> str:
    done = subprocess.run(
        ["virsh", "-c", uri, *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


@pytest.fixture
def site(libvirt_uri, qemu_pool):
    """The inventory: a cluster, the real libvirtd as an Up host, the test's pool as a data
    storage domain."""
    cluster = ClusterFactory(shutdown_timeout=SHUTDOWN_TIMEOUT)
    host = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP)
    domain = StorageDomainFactory(data_center=cluster.data_center, pool_name=qemu_pool)
    return cluster, host, domain


def status(vm) -> str:
    return VirtualMachine.objects.get(pk=vm.pk).status


def last_job(vm) -> Job:
    return Job.objects.filter(vm=vm).order_by("-pk").first()


def state(conn, vm) -> str:
    return conn.get_domain(str(vm.uuid)).state


def volume_names(conn, pool: str) -> set[str]:
    return {v.name for v in conn.list_volumes(pool)}


def create_vm(name, site, admin, work_off, conn) -> VirtualMachine:
    """A tiny VM (64 MB, 1 vCPU, 16 MiB thin disk) created through Vireo; checked Down."""
    cluster, _host, domain = site
    vm = vm_create(
        user=admin,
        name=name,
        cluster_id=cluster.pk,
        memory_mb=64,
        vcpus=1,
        disk_bytes=16 * MiB,
        storage_domain_id=domain.pk,
    )
    assert status(vm) == VMStatus.IMAGE_LOCKED  # committed; the job waits for the worker
    assert Disk.objects.get(vm=vm).status == DiskStatus.LOCKED
    assert work_off() == 1
    assert status(vm) == VMStatus.DOWN, last_job(vm).error
    disk = Disk.objects.get(vm=vm)
    assert disk.status == DiskStatus.OK
    volume = conn.get_volume(domain.pool_name, disk.volume_name)
    assert (volume.format, volume.capacity) == ("qcow2", 16 * MiB)
    assert 0 < disk.actual_bytes < 1 * MiB  # thin
    info = conn.get_domain(str(vm.uuid))
    assert (info.name, info.state, info.persistent) == (name, DomainState.SHUTOFF, True)
    assert (info.memory_mb, info.vcpus) == (64, 1)
    return vm


def test_power_states(site, admin, work, work_off, conn, prefix, libvirt_uri):
    vm = create_vm(f"{prefix}-vm", site, admin, work_off, conn)

    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP, last_job(vm).error
    assert state(conn, vm) == DomainState.RUNNING
    assert VirtualMachine.objects.get(pk=vm.pk).started_at is not None

    work(lambda: vm_suspend(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.SUSPENDED, last_job(vm).error
    saved = conn.get_domain(str(vm.uuid))
    assert (saved.state, saved.has_managed_save) == (DomainState.SHUTOFF, True)

    work(lambda: vm_run(vm_id=vm.pk, user=admin))  # restores the saved memory
    assert status(vm) == VMStatus.UP, last_job(vm).error
    restored = conn.get_domain(str(vm.uuid))
    assert (restored.state, restored.has_managed_save) == (DomainState.RUNNING, False)
    assert Event.objects.filter(
        vm=vm, action="run", phase=Phase.SUCCEEDED, message__contains="restored"
    ).exists()

    started = time.monotonic()
    job = work(lambda: vm_shutdown(vm_id=vm.pk, user=admin))
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT + 10  # the cluster's timeout, not 120 s
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert status(vm) == VMStatus.UP  # the guest ignored ACPI: still running
    assert state(conn, vm) == DomainState.RUNNING
    failed = Event.objects.get(vm=vm, action="shutdown", phase=Phase.FAILED)
    assert failed.error == job.error
    assert "still running" in failed.error and "Power Off" in failed.error
    assert f"within {SHUTDOWN_TIMEOUT} seconds" in failed.error

    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.DOWN, last_job(vm).error
    assert state(conn, vm) == DomainState.SHUTOFF
    assert VirtualMachine.objects.get(pk=vm.pk).started_at is None


def test_clone_and_remove(site, admin, work, work_off, conn, prefix, libvirt_uri, qemu_pool):
    vm = create_vm(f"{prefix}-vm", site, admin, work_off, conn)
    original = Disk.objects.get(vm=vm)

    clone = work(lambda: vm_clone(vm_id=vm.pk, user=admin, clone_name=f"{prefix}-clone"))
    assert status(clone) == VMStatus.DOWN, last_job(vm).error
    assert status(vm) == VMStatus.DOWN
    copy = Disk.objects.get(vm=clone)
    assert copy.status == DiskStatus.OK and copy.volume_name != original.volume_name
    assert volume_names(conn, qemu_pool) == {original.volume_name, copy.volume_name}
    copied = conn.get_volume(qemu_pool, copy.volume_name)
    assert (copied.format, copied.capacity) == ("qcow2", 16 * MiB)
    assert conn.get_domain(str(clone.uuid)).name == clone.name
    assert copied.path in virsh(libvirt_uri, "domblklist", str(clone.uuid))
    assert copied.path not in virsh(libvirt_uri, "domblklist", str(vm.uuid))

    work(lambda: vm_remove(vm_id=clone.pk, user=admin, remove_disks=True))
    assert not VirtualMachine.objects.filter(pk=clone.pk).exists(), last_job(clone).error
    assert not Disk.objects.filter(pk=copy.pk).exists()
    with pytest.raises(DomainNotFound):
        conn.get_domain(str(clone.uuid))
    assert volume_names(conn, qemu_pool) == {original.volume_name}
    assert state(conn, vm) == DomainState.SHUTOFF  # the source is untouched

    work(lambda: vm_remove(vm_id=vm.pk, user=admin, remove_disks=False))
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists(), last_job(vm).error
    with pytest.raises(DomainNotFound):
        conn.get_domain(str(vm.uuid))
    floating = Disk.objects.get(pk=original.pk)
    assert (floating.vm, floating.status) == (None, DiskStatus.OK)
    assert volume_names(conn, qemu_pool) == {original.volume_name}

    job = work(lambda: disk_remove(disk_id=floating.pk, user=admin))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert not Disk.objects.filter(pk=floating.pk).exists()
    with pytest.raises(VolumeNotFound):
        conn.get_volume(qemu_pool, original.volume_name)
    assert volume_names(conn, qemu_pool) == set()


@pytest.fixture
def monitor(site, prefix):
    """A Monitor in a thread. Its first cycle connects and registers for lifecycle events;
    the next poll is 30 s away, so within a test only events move a VM. Stopped afterwards."""
    _cluster, host, _domain = site
    watcher = Monitor(poll_seconds=30, stale_seconds=300)

    def run():
        try:
            watcher.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="test-monitor", daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: host.pk in watcher.watched, 15), "first monitor cycle"
        assert wait_for(lambda: Host.objects.get(pk=host.pk).last_seen, 15)
        yield watcher
    finally:
        watcher.stop.set()
        thread.join(10)
        assert not thread.is_alive()


def test_monitor_follows_a_virsh_pause(
    site, admin, work, work_off, conn, prefix, libvirt_uri, monitor
):
    vm = create_vm(f"{prefix}-vm", site, admin, work_off, conn)
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP, last_job(vm).error

    virsh(libvirt_uri, "suspend", vm.name)  # a pause made outside Vireo
    assert state(conn, vm) == DomainState.PAUSED
    assert wait_for(lambda: status(vm) == VMStatus.PAUSED, 2), status(vm)
    assert Event.objects.filter(
        vm=vm, action="status", phase=Phase.DETECTED, message__contains="Paused"
    ).exists()

    virsh(libvirt_uri, "resume", vm.name)
    assert wait_for(lambda: status(vm) == VMStatus.UP, 2), status(vm)


def test_a_domain_defined_with_virsh_is_adopted_run_and_gone(
    site, admin, work, conn, prefix, libvirt_uri, qemu_pool, monitor, tmp_path
):
    """Issue 9 item 3 on real qemu: a domain defined outside Vireo (virsh) shows up as
    external-<name> within a second of its lifecycle event, with its disks (one in the storage
    domain's pool, one a file no pool holds); Vireo runs and powers it off as it is, and when
    virsh undefines it, it leaves the inventory."""
    _cluster, host, domain = site
    in_pool = conn.create_volume(qemu_pool, f"{prefix}-a.qcow2", 16 * MiB, preallocate=False)
    loose = tmp_path / "loose.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(loose), "16M"], check=True)
    name = f"{prefix}-foreign"
    xml = tmp_path / "foreign.xml"
    xml.write_text(
        f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>96</memory><vcpu>2</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='{in_pool.path}'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='{loose}'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>"""
    )
    virsh(libvirt_uri, "define", str(xml))
    assert wait_for(lambda: VirtualMachine.objects.filter(name=f"external-{name}").exists(), 5)
    vm = VirtualMachine.objects.get(name=f"external-{name}")
    assert (vm.status, vm.memory_mb, vm.vcpus, vm.host_id) == (VMStatus.DOWN, 96, 2, host.pk)
    disk = Disk.objects.get(vm=vm)
    assert (disk.storage_domain_id, disk.volume_name) == (domain.pk, in_pool.name)
    assert vm.unmanaged_disks == [["vdb", "disk", str(loose)]]

    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP, last_job(vm).error
    assert state(conn, vm) == DomainState.RUNNING
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.DOWN, last_job(vm).error

    virsh(libvirt_uri, "undefine", name)
    assert wait_for(lambda: not VirtualMachine.objects.filter(pk=vm.pk).exists(), 5)
    assert Event.objects.filter(message__contains=f"external-{name} is gone").exists()


def test_snapshots_of_a_domain_defined_with_virsh(
    site, admin, work, conn, prefix, libvirt_uri, qemu_pool, monitor, tmp_path
):
    """Snapshots where an external VM's disks allow, on real qemu: its one disk is a volume of
    the storage domain's pool, so Create layers a qcow2 overlay, Preview and Undo point the
    domain's own definition (its maker's title kept) at the snapshot's volume and back, and
    Delete merges the overlay down again (qemu started paused for the block commit)."""
    _cluster, _host, _domain = site
    base = conn.create_volume(qemu_pool, f"{prefix}-x.qcow2", 16 * MiB, preallocate=False)
    name = f"{prefix}-snapped"
    xml = tmp_path / "snapped.xml"
    xml.write_text(
        f"""<domain type='qemu'><name>{name}</name><title>made by hand</title>
<memory unit='MiB'>96</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='{base.path}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""
    )
    virsh(libvirt_uri, "define", str(xml))
    assert wait_for(lambda: VirtualMachine.objects.filter(name=f"external-{name}").exists(), 5)
    vm = VirtualMachine.objects.get(name=f"external-{name}")
    disk = Disk.objects.get(vm=vm)

    snap = work(
        lambda: snapshot_create(vm_id=vm.pk, user=admin, description="s1", disk_ids=[disk.pk])
    )
    snap.refresh_from_db()
    assert snap.status == SnapshotStatus.OK, last_job(vm).error
    disk.refresh_from_db()
    overlay = conn.get_volume(qemu_pool, disk.volume_name)
    assert overlay.name != base.name and f"file='{overlay.path}'" in virsh(
        libvirt_uri, "dumpxml", name
    )

    work(
        lambda: snapshot_preview(
            vm_id=vm.pk, snapshot_id=snap.pk, user=admin, vm_configuration=False
        )
    )
    assert last_job(vm).status == JobStatus.SUCCEEDED, last_job(vm).error
    defined = virsh(libvirt_uri, "dumpxml", name)
    assert "<title>made by hand</title>" in defined and f"file='{overlay.path}'" not in defined
    work(lambda: snapshot_undo(vm_id=vm.pk, user=admin))
    assert f"file='{overlay.path}'" in virsh(libvirt_uri, "dumpxml", name)

    work(lambda: snapshot_delete(vm_id=vm.pk, snapshot_id=snap.pk, user=admin))
    assert last_job(vm).status == JobStatus.SUCCEEDED, last_job(vm).error
    assert f"file='{base.path}'" in virsh(libvirt_uri, "dumpxml", name)
    assert status(vm) == VMStatus.DOWN and state(conn, vm) == DomainState.SHUTOFF
    virsh(libvirt_uri, "undefine", name)
