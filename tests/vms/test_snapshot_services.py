"""Snapshot services: the snapshot table, conflicts, the free-space check (no hypervisor)."""

import pytest
from factories import DiskFactory, VMFactory
from helpers import GiB

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Job
from vms import snapshots as services
from vms.actions import snapshot_actions_allowed
from vms.choices import SnapshotStatus, VMStatus
from vms.models import Snapshot, SnapshotDisk, SnapshotPreview, VirtualMachine
from vms.services import vm_remove, vm_shutdown

pytestmark = pytest.mark.django_db


def snap(vm, status=SnapshotStatus.OK, disks=(), **fields):
    snapshot = Snapshot.objects.create(
        vm=vm, status=status, memory_mb=vm.memory_mb, vcpus=vm.vcpus, **fields
    )
    for disk in disks:
        SnapshotDisk.objects.create(
            snapshot=snapshot, disk=disk, volume_name=f"frozen-{disk.pk}-{snapshot.pk}"
        )
    return snapshot


@pytest.mark.parametrize(
    ("vm_status", "previewing", "busy", "snapshot_status", "expected"),
    [
        (VMStatus.DOWN, False, False, None, {"create"}),
        (VMStatus.UP, False, False, None, {"create"}),
        (VMStatus.DOWN, False, False, SnapshotStatus.OK, {"create", "preview", "clone", "delete"}),
        (VMStatus.UP, False, False, SnapshotStatus.OK, {"create", "clone", "delete"}),
        (VMStatus.DOWN, True, False, SnapshotStatus.IN_PREVIEW, {"commit", "undo"}),
        (VMStatus.DOWN, True, False, SnapshotStatus.OK, {"clone"}),
        (VMStatus.UP, True, False, SnapshotStatus.IN_PREVIEW, set()),
        (VMStatus.DOWN, False, True, SnapshotStatus.OK, set()),
        (VMStatus.IMAGE_LOCKED, False, False, SnapshotStatus.OK, set()),
        (VMStatus.SUSPENDED, False, False, SnapshotStatus.OK, {"clone"}),
    ],
)
def test_snapshot_table(vm_status, previewing, busy, snapshot_status, expected):
    allowed = snapshot_actions_allowed(
        vm_status=vm_status, previewing=previewing, busy=busy, snapshot_status=snapshot_status
    )
    assert allowed == expected


def test_create_locks_a_down_vm_and_records(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    disk = DiskFactory(vm=vm)
    snapshot = services.snapshot_create(
        vm_id=vm.pk, user=admin, description="before upgrade", disk_ids=[disk.pk]
    )
    vm.refresh_from_db()
    assert vm.status == VMStatus.IMAGE_LOCKED
    assert snapshot.status == SnapshotStatus.LOCKED
    job = Job.objects.get(kind="snapshot_create")
    assert job.params["snapshot_id"] == snapshot.pk and job.params["disk_ids"] == [disk.pk]


def test_create_on_a_running_vm_keeps_it_up(admin):
    vm = VMFactory(status=VMStatus.UP)
    disk = DiskFactory(vm=vm)
    services.snapshot_create(
        vm_id=vm.pk, user=admin, description="", disk_ids=[disk.pk], save_memory=True
    )
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


def test_create_refusals_change_nothing(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    disk = DiskFactory(vm=vm)
    other = DiskFactory()
    with pytest.raises(ActionRefused, match="Disks to include"):
        services.snapshot_create(vm_id=vm.pk, user=admin, description="", disk_ids=[])
    with pytest.raises(ActionRefused, match="Disks to include"):
        services.snapshot_create(vm_id=vm.pk, user=admin, description="", disk_ids=[other.pk])
    with pytest.raises(ActionRefused, match="Save Memory needs a running VM"):
        services.snapshot_create(
            vm_id=vm.pk, user=admin, description="", disk_ids=[disk.pk], save_memory=True
        )
    with pytest.raises(ActionRefused, match="too long"):
        services.snapshot_create(
            vm_id=vm.pk, user=admin, description="x" * 1001, disk_ids=[disk.pk]
        )
    vm.refresh_from_db()
    assert vm.status == VMStatus.DOWN and not Snapshot.objects.exists() and not Job.objects.exists()


def test_one_snapshot_operation_at_a_time_and_vm_actions_wait(admin):
    vm = VMFactory(status=VMStatus.UP)
    disk = DiskFactory(vm=vm)
    services.snapshot_create(vm_id=vm.pk, user=admin, description="one", disk_ids=[disk.pk])
    with pytest.raises(ActionRefused, match="another snapshot operation on it is in progress"):
        services.snapshot_create(vm_id=vm.pk, user=admin, description="two", disk_ids=[disk.pk])
    with pytest.raises(ActionRefused, match="a snapshot operation on it is in progress"):
        vm_shutdown(vm_id=vm.pk, user=admin)
    assert Snapshot.objects.count() == 1 and Job.objects.count() == 1


def test_remove_refused_while_a_snapshot_is_taken(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    disk = DiskFactory(vm=vm)
    services.snapshot_create(vm_id=vm.pk, user=admin, description="", disk_ids=[disk.pk])
    with pytest.raises(ActionRefused):
        vm_remove(vm_id=vm.pk, user=admin)
    assert VirtualMachine.objects.filter(pk=vm.pk).exists()


def test_preview_needs_a_down_vm_and_no_other_preview(admin):
    vm = VMFactory(status=VMStatus.UP)
    disk = DiskFactory(vm=vm)
    s1 = snap(vm, disks=[disk])
    with pytest.raises(ActionRefused, match="the VM is Up"):
        services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.DOWN)
    SnapshotPreview.objects.create(vm=vm, snapshot=s1, previous_memory_mb=1, previous_vcpus=1)
    with pytest.raises(ActionRefused, match="preview is active"):
        services.snapshot_preview(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)
    with pytest.raises(ActionRefused, match="preview is active"):
        services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)


def test_custom_preview_validates_each_disk_choice(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    vda, vdb = DiskFactory(vm=vm, target="vda"), DiskFactory(vm=vm, target="vdb")
    s1 = snap(vm, disks=[vda])
    s2 = snap(vm, disks=[vda, vdb])
    with pytest.raises(ActionRefused, match="includes it"):
        services.snapshot_preview(vm_id=vm.pk, snapshot_id=s2.pk, user=admin, disks={vdb.pk: s1.pk})
    with pytest.raises(ActionRefused, match="no saved memory"):
        services.snapshot_preview(vm_id=vm.pk, snapshot_id=s2.pk, user=admin, memory=True)
    job = services.snapshot_preview(
        vm_id=vm.pk, snapshot_id=s2.pk, user=admin, disks={vda.pk: s1.pk, vdb.pk: s2.pk}
    )
    assert job.params["disks"] == {str(vda.pk): s1.pk, str(vdb.pk): s2.pk}
    s2.refresh_from_db()
    assert s2.status == SnapshotStatus.LOCKED


def test_commit_and_undo_need_a_preview(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    with pytest.raises(ActionRefused, match="no snapshot is being previewed"):
        services.snapshot_commit(vm_id=vm.pk, user=admin)
    with pytest.raises(ActionRefused, match="no snapshot is being previewed"):
        services.snapshot_undo(vm_id=vm.pk, user=admin)


def test_delete_checks_free_space_with_figures(admin):
    vm = VMFactory(status=VMStatus.UP)
    disk = DiskFactory(vm=vm, actual_bytes=6 * GiB)
    domain = disk.storage_domain
    domain.free_bytes = 2 * GiB
    domain.save()
    s1 = snap(vm, disks=[disk])
    with pytest.raises(ActionRefused) as refused:
        services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)
    assert "needs 6.0 GiB free" in str(refused.value) and "2.0 GiB are free" in str(refused.value)
    s1.refresh_from_db()
    assert s1.status == SnapshotStatus.OK and not Job.objects.exists()
    domain.free_bytes = 10 * GiB
    domain.save()
    services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)
    with pytest.raises(ActionRefused, match="another snapshot operation"):
        services.snapshot_delete(vm_id=vm.pk, snapshot_id=s1.pk, user=admin)


def test_clone_from_snapshot_names_and_locks(admin):
    vm = VMFactory(status=VMStatus.UP)
    disk = DiskFactory(vm=vm)
    s1 = snap(vm, disks=[disk])
    with pytest.raises(ActionRefused, match="Name"):
        services.snapshot_clone(vm_id=vm.pk, snapshot_id=s1.pk, user=admin, name="bad name!")
    with pytest.raises(ActionRefused, match="already used"):
        services.snapshot_clone(vm_id=vm.pk, snapshot_id=s1.pk, user=admin, name=vm.name)
    clone = services.snapshot_clone(
        vm_id=vm.pk, snapshot_id=s1.pk, user=admin, name="from-snap", description="d"
    )
    assert clone.status == VMStatus.IMAGE_LOCKED and clone.memory_mb == s1.memory_mb
    s1.refresh_from_db()
    vm.refresh_from_db()
    assert s1.status == SnapshotStatus.LOCKED and vm.status == VMStatus.UP


def test_monitor_unlocks_snapshots_no_job_works_on():
    from datetime import timedelta

    from django.utils import timezone

    from vms.monitor import snapshots_unlock

    vm = VMFactory(status=VMStatus.DOWN)
    disk = DiskFactory(vm=vm)
    old = timezone.now() - timedelta(minutes=5)
    never_made = snap(vm, status=SnapshotStatus.LOCKED, created_at=old)
    half_deleted = snap(vm, status=SnapshotStatus.LOCKED, disks=[disk], created_at=old)
    previewed = snap(vm, status=SnapshotStatus.LOCKED, disks=[disk], created_at=old)
    SnapshotPreview.objects.create(
        vm=vm, snapshot=previewed, previous_memory_mb=1, previous_vcpus=1
    )
    busy_vm = VMFactory(status=VMStatus.UP)
    worked_on = snap(busy_vm, status=SnapshotStatus.LOCKED, created_at=old)
    snapshots_unlock(timezone.now() - timedelta(seconds=30), {busy_vm.pk})
    assert not Snapshot.objects.filter(pk=never_made.pk).exists()
    assert Snapshot.objects.get(pk=half_deleted.pk).status == SnapshotStatus.OK
    assert Snapshot.objects.get(pk=previewed.pk).status == SnapshotStatus.IN_PREVIEW
    assert Snapshot.objects.get(pk=worked_on.pk).status == SnapshotStatus.LOCKED
