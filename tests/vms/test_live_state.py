"""Status and progress agree: a row reads a VM's status and its active job in one statement
and shows the job's bar only while the VM is in that job's busy status; the busy statuses
are committed and broadcast, so a second browser sees them."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from factories import UserFactory
from helpers import GiB

import portal.kernel.live
import portal.kernel.tasks
from portal.kernel.models import Job, JobStatus
from vms import services, snapshots
from vms.choices import SnapshotStatus, VMStatus
from vms.models import Snapshot, SnapshotDisk, VirtualMachine
from vms.selectors import vm_rows


def run_job(vm, progress=10, status=JobStatus.RUNNING, kind="vm_run", **fields) -> Job:
    return Job.objects.create(
        kind=kind,
        description=f"{kind} {vm.name}",
        vm=vm,
        status=status,
        progress=progress,
        **fields,
    )


@pytest.mark.parametrize(
    ("kind", "vm_status", "shown"),
    [
        ("vm_run", VMStatus.POWERING_UP, True),
        ("vm_run", VMStatus.DOWN, False),  # "Down 10%": the run has not moved it yet, or failed
        ("vm_run", VMStatus.UP, False),  # "Up 0%": the job moved it on and is ending
        ("vm_create", VMStatus.IMAGE_LOCKED, True),
        ("vm_create", VMStatus.DOWN, False),  # "Image Locked 90%" / "Down 90%" after the copy
        ("vm_reboot", VMStatus.REBOOT_IN_PROGRESS, True),
        ("vm_shutdown", VMStatus.UP, False),
        ("snapshot_create", VMStatus.UP, True),  # a running VM stays Up while its snapshot runs
        ("snapshot_create", VMStatus.DOWN, False),
    ],
)
def test_progress_only_in_the_jobs_busy_status(admin, make_vm, kind, vm_status, shown):
    vm = make_vm(vm_status)
    run_job(vm, kind=kind)
    (row,) = vm_rows(admin, [vm])
    assert (row.job is not None) == shown
    if shown:
        assert (row.job.progress, row.job.kind, row.job.description) == (
            10,
            kind,
            f"{kind} {vm.name}",
        )


def test_an_ended_job_shows_no_progress(admin, make_vm):
    vm = make_vm(VMStatus.IMAGE_LOCKED)
    run_job(vm, progress=90, status=JobStatus.SUCCEEDED, kind="vm_create")
    assert vm_rows(admin, [vm])[0].job is None


def test_status_and_job_come_from_one_read(admin, make_vm):
    """A page's VMs were read before a job started: the row must not pair the old badge
    with the new job's bar (nor the old bar with the new badge)."""
    vm = make_vm(VMStatus.DOWN)
    stale = VirtualMachine.objects.select_related("host", "cluster").get(pk=vm.pk)
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.POWERING_UP)
    run_job(vm, progress=10)
    with CaptureQueriesContext(connection) as queries:
        (row,) = vm_rows(admin, [stale])
    assert (row.vm.status, row.job.progress) == (VMStatus.POWERING_UP, 10)
    assert row.actions == {"poweroff", "console"}
    # The job was read in the statement that read the status, not by a second query.
    job_table = Job._meta.db_table
    reads = [q["sql"] for q in queries if job_table in q["sql"]]
    assert len(reads) == 1 and VirtualMachine._meta.db_table in reads[0].split("FROM")[-1]
    # The clone a job makes shows the same job.
    clone = make_vm(VMStatus.IMAGE_LOCKED)
    source = make_vm(VMStatus.IMAGE_LOCKED)
    job = run_job(source, progress=40, kind="vm_clone", result_vm=clone)
    rows = vm_rows(admin, [source, clone])
    assert [r.job.pk for r in rows] == [job.pk, job.pk]


# -- the busy statuses are committed and broadcast ------------------------------------------------


@pytest.fixture
def observed(monkeypatch):
    """Each live message for a VM topic, with the status a browser re-fetching then reads."""
    seen: list[tuple[float, int, str]] = []
    real = portal.kernel.live.send_now

    def watch(*topics):
        for topic in topics:
            if topic.startswith("vm.") and topic.count(".") == 1:
                pk = int(topic.split(".")[1])
                status = VirtualMachine.objects.filter(pk=pk).values_list("status", flat=True)
                seen.append((time.monotonic(), pk, status.first() or "gone"))
        real(*topics)

    monkeypatch.setattr(portal.kernel.live, "send_now", watch)
    monkeypatch.setattr(portal.kernel.tasks, "send_now", watch)
    return seen


def statuses(seen, pk) -> list[str]:
    """The distinct statuses observed for a VM, in order."""
    out = []
    for _, vm_pk, status in seen:
        if vm_pk == pk and (not out or out[-1] != status):
            out.append(status)
    return out


@pytest.mark.django_db(transaction=True)
def test_reboot_in_progress_is_seen_for_the_hold(make_vm, work_off, observed, settings):
    settings.VIREO_REBOOT_HOLD_SECONDS = 0.4
    user = UserFactory(is_superuser=True)
    vm = make_vm(VMStatus.UP)
    services.vm_reboot(vm_id=vm.pk, user=user)  # commits: the enqueue and broadcast run now
    work_off()
    assert Job.objects.get().status == JobStatus.SUCCEEDED
    assert statuses(observed, vm.pk) == [VMStatus.REBOOT_IN_PROGRESS, VMStatus.UP]
    first = next(t for t, pk, s in observed if s == VMStatus.REBOOT_IN_PROGRESS)
    up = next(t for t, pk, s in observed if s == VMStatus.UP)
    assert up - first >= 0.4


@pytest.mark.django_db(transaction=True)
def test_new_vm_and_clone_from_snapshot_are_seen_image_locked(make_vm, work_off, observed):
    user = UserFactory(is_superuser=True)
    source = make_vm(VMStatus.DOWN)
    vm = services.vm_create(
        user=user,
        name="fresh",
        cluster_id=source.cluster_id,
        memory_mb=1024,
        vcpus=1,
        disk_bytes=GiB,
        storage_domain_id=source.disks.get().storage_domain_id,
    )
    snapshot = Snapshot.objects.create(
        vm=source, description="s1", status=SnapshotStatus.OK, memory_mb=1024, vcpus=1
    )
    disk = source.disks.get()
    SnapshotDisk.objects.create(snapshot=snapshot, disk=disk, volume_name=disk.volume_name)
    clone = snapshots.snapshot_clone(
        vm_id=source.pk, snapshot_id=snapshot.pk, user=user, name="from-s1"
    )
    work_off()
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    assert statuses(observed, vm.pk) == [VMStatus.IMAGE_LOCKED, VMStatus.DOWN]
    assert statuses(observed, clone.pk) == [VMStatus.IMAGE_LOCKED, VMStatus.DOWN]
