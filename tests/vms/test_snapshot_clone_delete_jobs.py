"""Snapshot jobs on libvirt's test driver: clone, delete, failures and remove. (Split out of
test_snapshot_jobs.py, which keeps create, preview, undo and commit.)"""

import pytest
from snapshot_jobs_support import (
    boom,
    chain,
    conn_of,
    disk_of,
    domain_disks,
    failed,
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
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from vms import snapshots as services
from vms.choices import BUSY_STATUSES, SnapshotStatus, VMStatus
from vms.models import Snapshot, SnapshotDisk, SnapshotPreview, VirtualMachine
from vms.services import vm_poweroff, vm_remove, vm_run

# -- clone ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vm_status", [VMStatus.DOWN, VMStatus.UP])
def test_clone_from_a_snapshot(admin, make_vm, work, vm_status):
    vm = make_vm(vm_status, memory_mb=1024, vcpus=1)
    s1 = take(work, admin, vm, "s1")
    take(work, admin, vm, "s2")
    VirtualMachine.objects.filter(pk=vm.pk).update(memory_mb=2048)
    source_volume = disk_of(vm).volume_name
    source_chain = chain(vm)
    clone = work(
        lambda: services.snapshot_clone(
            vm_id=vm.pk, snapshot_id=s1.pk, user=admin, name="from-s1", description="copy"
        )
    )
    job = Job.objects.get(kind="vm_clone")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    clone.refresh_from_db()
    assert (clone.status, clone.description, clone.memory_mb) == (VMStatus.DOWN, "copy", 1024)
    copy = disk_of(clone)
    assert copy.volume_name == f"{clone.uuid}-vda.qcow2"
    assert conn_of(clone).volume_chain(pool_of(vm), copy.volume_name) == [copy.volume_name]
    assert domain_disks(clone) == {"vda": copy.volume_name}
    assert (status(vm), disk_of(vm).volume_name, chain(vm)) == (
        vm_status,
        source_volume,
        source_chain,
    )
    assert snap_status(s1) == SnapshotStatus.OK
    assert Event.objects.filter(
        job=job,
        phase=Phase.SUCCEEDED,
        message=f"Snapshot 's1' of VM {vm.name} was cloned to from-s1.",
    ).exists()


# -- delete ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vm_status", [VMStatus.DOWN, VMStatus.UP])
def test_delete_a_middle_then_the_newest_snapshot(admin, make_vm, work, monkeypatch, vm_status):
    vm = make_vm(vm_status)
    base = disk_of(vm).volume_name
    s1 = take(work, admin, vm, "s1")
    s2 = take(work, admin, vm, "s2", memory=vm_status == VMStatus.UP)
    s3 = take(work, admin, vm, "s3")
    active = disk_of(vm).volume_name
    assert chain(vm) == [active, frozen(s3), frozen(s2), base]
    merges = []
    spy(monkeypatch, "merge_volumes", merges, lambda: status(vm))

    # The middle one: its volume takes in its successor's (s3's frozen volume).
    s2_volume, s3_volume = frozen(s2), frozen(s3)
    job = work(lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=s2.pk, user=admin))
    event = succeeded(job)
    assert event.message == f"Snapshot 's2' of VM {vm.name} was deleted; its data was merged."
    assert merges[0][0] == (str(vm.uuid), "vda")
    assert merges[0][1]["top"] == s3_volume and merges[0][1]["base"] == s2_volume
    expected_busy = VMStatus.IMAGE_LOCKED if vm_status == VMStatus.DOWN else VMStatus.UP
    assert merges[0][2] == expected_busy
    assert not Snapshot.objects.filter(pk=s2.pk).exists()
    assert status(vm) == vm_status
    assert chain(vm) == [active, s2_volume, base]
    assert s3_volume not in pool_volumes(vm)
    assert frozen(s3) == s2_volume  # s3's state now lives in the merged volume
    for remaining in (s1, s3):
        assert frozen(remaining) in chain(vm)
    if s2.memory_volume:
        assert s2.memory_volume.partition("/")[2] not in pool_volumes(vm)
    assert snap_status(s3) == SnapshotStatus.OK

    # The newest one: the active layer goes down into its volume.
    job = work(lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=s3.pk, user=admin))
    succeeded(job)
    assert merges[1][1]["top"] == active and merges[1][1]["base"] == s2_volume
    assert disk_of(vm).volume_name == s2_volume
    assert chain(vm) == [s2_volume, base]
    assert active not in pool_volumes(vm)
    assert domain_disks(vm) == {"vda": s2_volume}
    assert frozen(s1) == base and snap_status(s1) == SnapshotStatus.OK
    assert status(vm) == vm_status
    expected_state = {
        VMStatus.DOWN: hypervisor.DomainState.SHUTOFF,
        VMStatus.UP: hypervisor.DomainState.RUNNING,
    }[vm_status]
    assert conn_of(vm).get_domain(str(vm.uuid)).state == expected_state


def test_deleting_a_committed_snapshot_forgets_its_memory(admin, make_vm, work):
    """Commit of a preview with memory leaves the memory for the next Run; deleting that
    snapshot deletes the memory volume, so Run must boot instead of failing for good."""
    vm = make_vm(VMStatus.UP)
    s1 = take(work, admin, vm, "s1", memory=True)
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    succeeded(
        work(
            lambda: services.snapshot_preview(
                vm_id=vm.pk, snapshot_id=s1.pk, user=admin, memory=True
            )
        )
    )
    succeeded(work(lambda: services.snapshot_commit(vm_id=vm.pk, user=admin)))
    assert VirtualMachine.objects.get(pk=vm.pk).resume_memory_volume == s1.memory_volume
    succeeded(work(lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    assert s1.memory_volume.partition("/")[2] not in pool_volumes(vm)
    assert VirtualMachine.objects.get(pk=vm.pk).resume_memory_volume == ""
    run = work(lambda: vm_run(vm_id=vm.pk, user=admin))
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert status(vm) == VMStatus.UP


def test_delete_the_oldest_snapshot(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    base = disk_of(vm).volume_name
    s1 = take(work, admin, vm, "s1")
    s2 = take(work, admin, vm, "s2")
    s2_volume = frozen(s2)
    succeeded(work(lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    assert chain(vm) == [disk_of(vm).volume_name, base]
    assert s2_volume not in pool_volumes(vm)
    assert frozen(s2) == base


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vm_status", [VMStatus.DOWN, VMStatus.UP])
def test_failed_create_leaves_no_snapshot(admin, make_vm, work, monkeypatch, vm_status):
    vm = make_vm(vm_status)
    before = disk_of(vm).volume_name
    boom(monkeypatch, "snapshot_disks")
    work(
        lambda: services.snapshot_create(
            vm_id=vm.pk,
            user=admin,
            description="x",
            disk_ids=[disk_of(vm).pk],
            save_memory=vm_status == VMStatus.UP,
        )
    )
    event = failed(last_job(vm, "snapshot_create"))
    assert event.message == f"Failed to create a snapshot of VM {vm.name}."
    assert not Snapshot.objects.filter(vm=vm).exists()
    assert not SnapshotDisk.objects.exists()
    assert status(vm) == vm_status and status(vm) not in BUSY_STATUSES
    assert disk_of(vm).volume_name == before
    assert pool_volumes(vm) == {before}


def test_failed_preview_puts_everything_back(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.DOWN, disks=2, memory_mb=1024)
    s1 = take(work, admin, vm)
    VirtualMachine.objects.filter(pk=vm.pk).update(memory_mb=2048)
    actives = {t: disk_of(vm, t).volume_name for t in ("vda", "vdb")}
    volumes = pool_volumes(vm)
    boom(monkeypatch, "define_domain")  # after both preview overlays were made
    job = work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin))
    event = failed(job)
    assert event.message == f"Failed to preview a snapshot of VM {vm.name}."
    assert snap_status(s1) == SnapshotStatus.OK
    vm.refresh_from_db()
    assert (vm.status, vm.memory_mb) == (VMStatus.DOWN, 2048)
    assert {t: disk_of(vm, t).volume_name for t in ("vda", "vdb")} == actives
    assert not SnapshotPreview.objects.filter(vm=vm).exists()
    assert pool_volumes(vm) == volumes  # the preview overlays were removed


def test_failed_preview_overlay(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.DOWN)
    s1 = take(work, admin, vm)
    boom(monkeypatch, "create_overlay")
    failed(work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    assert (snap_status(s1), status(vm)) == (SnapshotStatus.OK, VMStatus.DOWN)


@pytest.mark.parametrize("vm_status", [VMStatus.DOWN, VMStatus.UP])
def test_failed_delete_keeps_the_snapshot(admin, make_vm, work, monkeypatch, vm_status):
    vm = make_vm(vm_status)
    s1 = take(work, admin, vm)
    s2 = take(work, admin, vm)
    before = (chain(vm), frozen(s1), frozen(s2), disk_of(vm).volume_name)
    boom(monkeypatch, "merge_volumes")
    job = work(lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin))
    event = failed(job)
    assert event.message == f"Failed to delete a snapshot of VM {vm.name}."
    assert (snap_status(s1), snap_status(s2)) == (SnapshotStatus.OK, SnapshotStatus.OK)
    assert status(vm) == vm_status
    assert (chain(vm), frozen(s1), frozen(s2), disk_of(vm).volume_name) == before
    # Nothing is stuck: the same delete succeeds once the host behaves.
    monkeypatch.undo()
    succeeded(work(lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))


@pytest.mark.parametrize("action", ["undo", "commit"])
def test_failed_end_of_preview_stays_in_preview(admin, make_vm, work, monkeypatch, action):
    vm = make_vm(VMStatus.DOWN)
    s1 = take(work, admin, vm)
    succeeded(work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    preview = disk_of(vm).volume_name
    boom(monkeypatch, "define_domain" if action == "undo" else "volume_chain")
    service = services.snapshot_undo if action == "undo" else services.snapshot_commit
    failed(work(lambda: service(vm_id=vm.pk, user=admin)))
    assert snap_status(s1) == SnapshotStatus.IN_PREVIEW
    assert status(vm) == VMStatus.DOWN
    assert SnapshotPreview.objects.filter(vm=vm).exists()
    assert disk_of(vm).volume_name == preview


def test_commit_that_cannot_erase_a_volume_still_ends_the_preview(
    admin, make_vm, work, monkeypatch
):
    """The inventory lets go first: a volume the host refuses to delete is reported, and the
    VM is not left in a preview whose volumes are half gone (Commit and Undo both stuck)."""
    vm = make_vm(VMStatus.UP)
    s1 = take(work, admin, vm, "s1")
    s2 = take(work, admin, vm, "s2", memory=True)
    memory = s2.memory_volume.partition("/")[2]
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    succeeded(work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)))
    original = hypervisor.Connection.delete_volume

    def refuse_memory(self, pool, name):
        if name == memory:
            raise hypervisor.HypervisorError("boom")
        return original(self, pool, name)

    monkeypatch.setattr(hypervisor.Connection, "delete_volume", refuse_memory)
    event = succeeded(work(lambda: services.snapshot_commit(vm_id=vm.pk, user=admin)))
    assert event.message.endswith(f"Volumes left on the host: {memory}.")
    assert snap_status(s1) == SnapshotStatus.OK
    assert not Snapshot.objects.filter(pk=s2.pk).exists()
    assert not SnapshotPreview.objects.filter(vm=vm).exists()
    assert status(vm) == VMStatus.DOWN
    assert chain(vm) == [disk_of(vm).volume_name, frozen(s1)]
    monkeypatch.undo()
    take(work, admin, vm, "after")  # and the VM goes on


# -- remove ------------------------------------------------------------------------------------


@pytest.mark.parametrize("previewing", [False, True])
def test_remove_deletes_every_volume_and_memory(admin, make_vm, work, previewing):
    vm = make_vm(VMStatus.UP, disks=2)
    neighbour = make_vm(VMStatus.DOWN, host=vm.host)
    s1 = take(work, admin, vm, memory=True)
    take(work, admin, vm, memory=True)
    take(work, admin, vm)
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    if previewing:
        succeeded(
            work(lambda: services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin))
        )
        # Removing during a preview is refused (the kept-aside layers would be orphaned
        # without disks); after Undo every layer still goes.
        with pytest.raises(ActionRefused, match="snapshot preview is active"):
            vm_remove(vm_id=vm.pk, user=admin, remove_disks=False)
        succeeded(work(lambda: services.snapshot_undo(vm_id=vm.pk, user=admin)))
    assert len(pool_volumes(vm)) > 8
    job = work(lambda: vm_remove(vm_id=vm.pk, user=admin, remove_disks=True))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert not Snapshot.objects.exists() and not SnapshotDisk.objects.exists()
    assert pool_volumes(neighbour) == {disk_of(neighbour).volume_name}
