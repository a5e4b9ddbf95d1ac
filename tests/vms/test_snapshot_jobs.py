"""Snapshot jobs end to end on libvirt's test driver (chains emulated by hypervisor/testdriver.py):
service -> on-commit enqueue -> real RQ worker -> test host, and back to real statuses."""

import xml.etree.ElementTree as ET

import pytest
from helpers import MiB

import hypervisor
from portal.errors import ActionRefused
from portal.models import Event, Job, JobStatus, Phase, Severity
from storage.models import Disk
from vms import snapshots as services
from vms.choices import BUSY_STATUSES, SnapshotStatus, VMStatus
from vms.models import Snapshot, SnapshotDisk, SnapshotPreview, VirtualMachine
from vms.services import vm_poweroff, vm_remove, vm_run


def conn_of(vm) -> hypervisor.Connection:
    return hypervisor.connect(vm.host.uri)


def disk_of(vm, target="vda") -> Disk:
    return Disk.objects.select_related("storage_domain").get(vm=vm, target=target)


def pool_of(vm) -> str:
    return disk_of(vm).storage_domain.pool_name


def chain(vm, target="vda") -> list[str]:
    disk = disk_of(vm, target)
    return conn_of(vm).volume_chain(disk.storage_domain.pool_name, disk.volume_name)


def pool_volumes(vm) -> set[str]:
    return {v.name for v in conn_of(vm).list_volumes(pool_of(vm))}


def domain_disks(vm) -> dict[str, str]:
    """target -> volume name of the domain's persistent definition (the emulation keeps a
    running test domain's current disks there)."""
    dom = conn_of(vm)._conn.lookupByUUIDString(str(vm.uuid))
    xml = dom.XMLDesc(2)  # VIR_DOMAIN_XML_INACTIVE
    return {
        d.find("target").get("dev"): d.find("source").get("file").rsplit("/", 1)[-1]
        for d in ET.fromstring(xml).findall("devices/disk")
    }


def frozen(snapshot, target="vda") -> str:
    return SnapshotDisk.objects.get(snapshot=snapshot, disk__target=target).volume_name


def status(vm) -> str:
    return VirtualMachine.objects.get(pk=vm.pk).status


def snap_status(snapshot) -> str:
    return Snapshot.objects.get(pk=snapshot.pk).status


def phases(job) -> list[str]:
    return list(Event.objects.filter(job=job).order_by("id").values_list("phase", flat=True))


def succeeded(job) -> Event:
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, ""), job.error
    assert phases(job) == [Phase.REQUESTED, Phase.STARTED, Phase.SUCCEEDED]
    return Event.objects.get(job=job, phase=Phase.SUCCEEDED)


def failed(job, error="boom") -> Event:
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, error)
    event = Event.objects.get(job=job, phase=Phase.FAILED)
    assert (event.error, event.severity, event.action) == (error, Severity.ERROR, "snapshot")
    return event


def last_job(vm, kind=None) -> Job:
    jobs = Job.objects.filter(vm=vm)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs.order_by("-pk").first()


def spy(monkeypatch, name, seen, observe=None):
    """Wrap Connection.`name`: record each call's arguments (and what `observe()` says then)."""
    original = getattr(hypervisor.Connection, name)

    def wrapper(self, *args, **kwargs):
        seen.append((args, kwargs, observe() if observe else None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(hypervisor.Connection, name, wrapper)


def boom(monkeypatch, name):
    def fail(self, *args, **kwargs):
        raise hypervisor.HypervisorError("boom")

    monkeypatch.setattr(hypervisor.Connection, name, fail)


def take(work, admin, vm, description="", disks=None, memory=False) -> Snapshot:
    ids = disks if disks is not None else list(vm.disks.values_list("pk", flat=True))
    snapshot = work(
        lambda: services.snapshot_create(
            vm_id=vm.pk, user=admin, description=description, disk_ids=ids, save_memory=memory
        )
    )
    succeeded(last_job(vm, "snapshot_create"))
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.OK
    return snapshot


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
