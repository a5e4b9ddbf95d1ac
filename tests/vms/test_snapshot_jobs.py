"""Snapshot jobs end to end on libvirt's test driver (chains emulated by hypervisor/testdriver.py):
service -> on-commit enqueue -> real RQ worker -> test host, and back to real statuses."""

from helpers import MiB
from snapshot_jobs_support import (
    chain,
    conn_of,
    disk_of,
    domain_disks,
    frozen,
    last_job,
    pool_of,
    pool_volumes,
    snap_status,
    spy,
    status,
    succeeded,
    take,
)

import hypervisor
from portal.kernel.models import Event, JobStatus, Phase
from vms import snapshots as services
from vms.choices import SnapshotStatus, VMStatus
from vms.models import Snapshot, SnapshotDisk, SnapshotPreview, VirtualMachine
from vms.services import vm_poweroff, vm_run

# -- create ------------------------------------------------------------------------------------


def test_create_on_a_down_vm(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.DOWN)
    old = disk_of(vm).volume_name
    seen = []
    spy(
        monkeypatch,
        "snapshot_disks",
        seen,
        lambda: (status(vm), list(Snapshot.objects.values_list("status", flat=True))),
    )
    snapshot = work(
        lambda: services.snapshot_create(
            vm_id=vm.pk, user=admin, description="before upgrade", disk_ids=[disk_of(vm).pk]
        )
    )
    job = last_job(vm, "snapshot_create")
    event = succeeded(job)
    assert event.message == f"Snapshot 'before upgrade' of VM {vm.name} was created."
    # While the job worked: the VM Image Locked, the snapshot Locked.
    assert seen[0][2] == (VMStatus.IMAGE_LOCKED, [SnapshotStatus.LOCKED])
    assert seen[0][1]["memory_volume"] is None
    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.memory_volume) == (SnapshotStatus.OK, "")
    assert (snapshot.memory_mb, snapshot.vcpus) == (vm.memory_mb, vm.vcpus)
    assert status(vm) == VMStatus.DOWN
    overlay = f"{vm.uuid}-vda-s{snapshot.pk}.qcow2"
    assert frozen(snapshot) == old
    assert disk_of(vm).volume_name == overlay
    assert chain(vm) == [overlay, old]
    assert domain_disks(vm) == {"vda": overlay}
    assert conn_of(vm).get_domain(str(vm.uuid)).state == hypervisor.DomainState.SHUTOFF


def test_create_includes_only_the_chosen_disks(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2)
    vdb_before = disk_of(vm, "vdb").volume_name
    snapshot = take(work, admin, vm, disks=[disk_of(vm, "vda").pk])
    assert list(snapshot.disks.values_list("disk__target", flat=True)) == ["vda"]
    assert disk_of(vm, "vdb").volume_name == vdb_before
    assert chain(vm, "vdb") == [vdb_before]
    assert len(chain(vm, "vda")) == 2


def test_create_on_a_running_vm_with_memory(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.UP)
    old = disk_of(vm).volume_name
    seen = []
    spy(monkeypatch, "snapshot_disks", seen, lambda: status(vm))
    snapshot = take(work, admin, vm, "live", memory=True)
    assert seen[0][2] == VMStatus.UP  # never locked
    assert status(vm) == VMStatus.UP
    assert conn_of(vm).get_domain(str(vm.uuid)).state == hypervisor.DomainState.RUNNING
    pool = pool_of(vm)
    memory = f"{vm.uuid}-s{snapshot.pk}.mem"
    assert snapshot.memory_volume == f"{pool}/{memory}" and snapshot.memory_saved
    assert memory in pool_volumes(vm)
    assert conn_of(vm).get_volume(pool, memory).capacity == vm.memory_mb * MiB
    assert frozen(snapshot) == old
    assert chain(vm) == [f"{vm.uuid}-vda-s{snapshot.pk}.qcow2", old]
    event = Event.objects.get(job=last_job(vm), phase=Phase.SUCCEEDED)
    assert event.message.endswith("was created with memory.")


# -- preview, custom preview, run with memory, undo, commit -------------------------------------


def test_preview_with_the_snapshots_configuration(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.DOWN, memory_mb=1024, vcpus=1)
    s1 = take(work, admin, vm, "s1")
    active = disk_of(vm).volume_name
    VirtualMachine.objects.filter(pk=vm.pk).update(memory_mb=2048, vcpus=2)
    seen = []
    spy(monkeypatch, "create_overlay", seen, lambda: (status(vm), snap_status(s1)))
    job = work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin))
    event = succeeded(job)
    assert event.message == f"Snapshot 's1' of VM {vm.name} is in Preview Mode."
    assert seen[0][2] == (VMStatus.IMAGE_LOCKED, SnapshotStatus.LOCKED)
    assert snap_status(s1) == SnapshotStatus.IN_PREVIEW
    vm.refresh_from_db()
    assert (vm.status, vm.memory_mb, vm.vcpus) == (VMStatus.DOWN, 1024, 1)
    preview = f"{vm.uuid}-vda-p{s1.pk}.qcow2"
    assert disk_of(vm).volume_name == preview
    assert chain(vm) == [preview, frozen(s1)]  # backed by the snapshot's volume
    assert active in pool_volumes(vm)  # the state before the preview is kept aside
    kept = SnapshotPreview.objects.get(vm=vm)
    assert kept.snapshot == s1 and (kept.previous_memory_mb, kept.previous_vcpus) == (2048, 2)
    assert kept.disks == {
        str(disk_of(vm).pk): {"active": active, "preview": preview, "snapshot": s1.pk}
    }
    info = conn_of(vm).get_domain(str(vm.uuid))
    assert (info.memory_mb, info.vcpus) == (1024, 1)
    assert domain_disks(vm) == {"vda": preview}


def test_preview_without_the_configuration_keeps_it(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, memory_mb=1024)
    s1 = take(work, admin, vm)
    VirtualMachine.objects.filter(pk=vm.pk).update(memory_mb=2048)
    job = work(
        lambda: services.snapshot_preview(
            vm_id=vm.pk, snapshot_id=s1.pk, user=admin, vm_configuration=False
        )
    )
    succeeded(job)
    vm.refresh_from_db()
    assert vm.memory_mb == 2048
    assert chain(vm)[1:] == [frozen(s1)]


def test_custom_preview_draws_on_two_snapshots(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2)
    vda, vdb = disk_of(vm, "vda"), disk_of(vm, "vdb")
    s1 = take(work, admin, vm, "s1")
    s2 = take(work, admin, vm, "s2")
    job = work(
        lambda: services.snapshot_preview(
            vm_id=vm.pk, snapshot_id=s2.pk, user=admin, disks={vda.pk: s1.pk, vdb.pk: s2.pk}
        )
    )
    succeeded(job)
    assert (snap_status(s1), snap_status(s2)) == (SnapshotStatus.OK, SnapshotStatus.IN_PREVIEW)
    assert chain(vm, "vda") == [f"{vm.uuid}-vda-p{s2.pk}.qcow2", frozen(s1, "vda")]
    assert chain(vm, "vdb")[:2] == [f"{vm.uuid}-vdb-p{s2.pk}.qcow2", frozen(s2, "vdb")]
    kept = SnapshotPreview.objects.get(vm=vm).disks
    assert {k: v["snapshot"] for k, v in kept.items()} == {str(vda.pk): s1.pk, str(vdb.pk): s2.pk}
    assert domain_disks(vm) == {
        "vda": f"{vm.uuid}-vda-p{s2.pk}.qcow2",
        "vdb": f"{vm.uuid}-vdb-p{s2.pk}.qcow2",
    }


def test_custom_preview_can_keep_a_disk_as_it_is(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2)
    vda, vdb = disk_of(vm, "vda"), disk_of(vm, "vdb")
    s1 = take(work, admin, vm)
    vdb_active = disk_of(vm, "vdb").volume_name
    job = work(
        lambda: services.snapshot_preview(
            vm_id=vm.pk, snapshot_id=s1.pk, user=admin, disks={vda.pk: s1.pk, vdb.pk: None}
        )
    )
    succeeded(job)
    assert disk_of(vm, "vdb").volume_name == vdb_active
    assert list(SnapshotPreview.objects.get(vm=vm).disks) == [str(vda.pk)]
    assert domain_disks(vm)["vdb"] == vdb_active


def test_run_after_a_preview_with_memory_restores_it(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.UP)
    s1 = take(work, admin, vm, memory=True)
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.DOWN
    job = work(
        lambda: services.snapshot_preview(
            vm_id=vm.pk, snapshot_id=s1.pk, user=admin, memory=True, disks=None
        )
    )
    succeeded(job)
    vm.refresh_from_db()
    assert vm.resume_memory_volume == s1.memory_volume
    restored, started = [], []
    spy(monkeypatch, "restore_memory", restored)
    spy(monkeypatch, "start", started)
    run = work(lambda: vm_run(vm_id=vm.pk, user=admin))
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.error
    pool, _, volume = s1.memory_volume.partition("/")
    assert [args for args, _kw, _ in restored] == [(str(vm.uuid), pool, volume)]
    assert started == []
    vm.refresh_from_db()
    assert (vm.status, vm.resume_memory_volume) == (VMStatus.UP, "")
    assert conn_of(vm).get_domain(str(vm.uuid)).state == hypervisor.DomainState.RUNNING


def test_run_after_a_preview_without_memory_boots(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.UP)
    s1 = take(work, admin, vm, memory=True)
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    succeeded(
        work(
            lambda: services.snapshot_preview(
                vm_id=vm.pk, snapshot_id=s1.pk, user=admin, memory=False
            )
        )
    )
    assert VirtualMachine.objects.get(pk=vm.pk).resume_memory_volume == ""
    restored, started = [], []
    spy(monkeypatch, "restore_memory", restored)
    spy(monkeypatch, "start", started)
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP
    assert (restored, len(started)) == ([], 1)


def test_undo_puts_back_the_volumes_and_configuration(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2, memory_mb=1024, vcpus=1)
    s1 = take(work, admin, vm)
    actives = {t: disk_of(vm, t).volume_name for t in ("vda", "vdb")}
    chains = {t: chain(vm, t) for t in ("vda", "vdb")}
    VirtualMachine.objects.filter(pk=vm.pk).update(memory_mb=2048, vcpus=2)
    succeeded(work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    previews = {t: disk_of(vm, t).volume_name for t in ("vda", "vdb")}
    assert previews["vda"] in pool_volumes(vm)

    job = work(lambda: services.snapshot_undo(vm_id=vm.pk, user=admin))
    event = succeeded(job)
    assert event.message == f"The preview of snapshot '{s1}' of VM {vm.name} was undone."
    vm.refresh_from_db()
    assert (vm.status, vm.memory_mb, vm.vcpus) == (VMStatus.DOWN, 2048, 2)
    assert {t: disk_of(vm, t).volume_name for t in ("vda", "vdb")} == actives
    assert {t: chain(vm, t) for t in ("vda", "vdb")} == chains
    assert not set(previews.values()) & pool_volumes(vm)
    assert snap_status(s1) == SnapshotStatus.OK
    assert not SnapshotPreview.objects.filter(vm=vm).exists()
    assert domain_disks(vm) == actives
    info = conn_of(vm).get_domain(str(vm.uuid))
    assert (info.memory_mb, info.vcpus) == (2048, 2)


def test_undo_forgets_the_memory_to_restore(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    s1 = take(work, admin, vm, memory=True)
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    succeeded(
        work(
            lambda: services.snapshot_preview(
                vm_id=vm.pk, snapshot_id=s1.pk, user=admin, memory=True
            )
        )
    )
    succeeded(work(lambda: services.snapshot_undo(vm_id=vm.pk, user=admin)))
    vm.refresh_from_db()
    assert vm.resume_memory_volume == ""
    assert s1.memory_volume.partition("/")[2] in pool_volumes(vm)  # the snapshot keeps it


def test_commit_erases_later_snapshots_and_keeps_earlier_ones(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    base = disk_of(vm).volume_name
    s0 = take(work, admin, vm, "s0")
    s1 = take(work, admin, vm, "s1")
    s2 = take(work, admin, vm, "s2", memory=True)
    s3 = take(work, admin, vm, "s3", memory=True)
    pre_preview = disk_of(vm).volume_name
    later_volumes = {frozen(s2), frozen(s3), pre_preview}
    memories = {s.memory_volume.partition("/")[2] for s in (s2, s3)}
    assert memories <= pool_volumes(vm)
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    succeeded(work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    preview = disk_of(vm).volume_name

    job = work(lambda: services.snapshot_commit(vm_id=vm.pk, user=admin))
    event = succeeded(job)
    assert event.message == (
        f"Snapshot 's1' of VM {vm.name} was committed; 2 later snapshot(s) erased."
    )
    assert set(Snapshot.objects.filter(vm=vm).values_list("description", flat=True)) == {
        "s0",
        "s1",
    }
    assert (snap_status(s0), snap_status(s1)) == (SnapshotStatus.OK, SnapshotStatus.OK)
    assert not SnapshotPreview.objects.filter(vm=vm).exists()
    assert status(vm) == VMStatus.DOWN
    volumes = pool_volumes(vm)
    assert not (later_volumes | memories) & volumes
    assert disk_of(vm).volume_name == preview  # the VM keeps the previewed state
    assert chain(vm) == [preview, frozen(s1), frozen(s0)]
    assert frozen(s0) == base
    assert set(
        SnapshotDisk.objects.filter(snapshot__vm=vm).values_list("volume_name", flat=True)
    ) == {
        frozen(s0),
        frozen(s1),
    }
    # After the commit the VM is an ordinary VM again: snapshots and Run work.
    s4 = take(work, admin, vm, "s4")
    assert chain(vm)[1:] == [preview, frozen(s1), frozen(s0)] and frozen(s4) == preview
