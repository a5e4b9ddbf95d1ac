"""Snapshots through Vireo (services, RQ jobs, the worker) on a real libvirtd with qemu.

A marker letter is written into the first 512 bytes of the VM's current disk volume with
qemu-io while the VM is Down, and read back through the volume's chain with `qemu-io -r`:
previews, undo, commit, clone and deletes must show the guest the data of the right point in
time. Every domain and volume a test makes is removed afterwards, pass or fail.
"""

import json
import subprocess

import pytest
from factories import ClusterFactory, HostFactory, StorageDomainFactory
from helpers import MiB

from hypervisor import DomainState, VolumeNotFound
from portal.kernel.models import Event, Job, JobStatus, Phase
from storage.models import Disk
from vms import snapshots
from vms.choices import HostStatus, SnapshotStatus, VMStatus
from vms.models import Snapshot, SnapshotDisk, SnapshotPreview, VirtualMachine
from vms.services import vm_create, vm_poweroff, vm_remove, vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# ---- markers ---------------------------------------------------------------------------------


def write(path: str, letter: str) -> None:
    """Fill the first 512 bytes of the qcow2 image at `path` with `letter` (VM Down)."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {ord(letter):#x} 0 512", path],
        check=True,
        capture_output=True,
        timeout=60,
    )


def reads(path: str, letter: str) -> bool:
    """Whether the first 512 bytes read through the image's chain are all `letter`."""
    done = subprocess.run(
        ["qemu-io", "-r", "-f", "qcow2", "-c", f"read -P {ord(letter):#x} 0 512", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr


def marker(path: str) -> str:
    """The one marker letter the image shows (asserting it is exactly one of A..F)."""
    found = [letter for letter in "ABCDEF" if reads(path, letter)]
    assert len(found) == 1, f"{path}: {found}"
    return found[0]


def backing_file(path: str) -> str | None:
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout).get("backing-filename")


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def site(libvirt_uri, qemu_pool, prefix):
    cluster = ClusterFactory(shutdown_timeout=2)
    host = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP)
    domain = StorageDomainFactory(data_center=cluster.data_center, pool_name=qemu_pool)
    return cluster, host, domain


# ---- helpers ---------------------------------------------------------------------------------


def status(vm) -> str:
    return VirtualMachine.objects.get(pk=vm.pk).status


def ok(job) -> Job:
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, f"{job.kind}: {job.error}"
    return job


def last_job(vm) -> Job:
    return Job.objects.filter(vm=vm).order_by("-pk").first()


def disk(vm) -> Disk:
    return Disk.objects.select_related("storage_domain").get(vm=vm)


def path(conn, vm) -> str:
    """The file of the VM's current disk volume (the pool's dir + the volume's name)."""
    d = disk(vm)
    return conn.get_volume(d.storage_domain.pool_name, d.volume_name).path


def chain(conn, vm) -> list[str]:
    d = disk(vm)
    return conn.volume_chain(d.storage_domain.pool_name, d.volume_name)


def frozen(snapshot) -> str:
    return SnapshotDisk.objects.get(snapshot=snapshot).volume_name


def volume_names(conn, pool) -> set[str]:
    return {v.name for v in conn.list_volumes(pool)}


def create_vm(name, site, admin, work, conn) -> VirtualMachine:
    """A tiny VM (64 MB, 1 vCPU, one 16 MiB thin disk) created through Vireo; Down."""
    cluster, _host, domain = site
    vm = work(
        lambda: vm_create(
            user=admin,
            name=name,
            cluster_id=cluster.pk,
            memory_mb=64,
            vcpus=1,
            disk_bytes=16 * MiB,
            storage_domain_id=domain.pk,
        )
    )
    assert status(vm) == VMStatus.DOWN, last_job(vm).error
    return vm


def take(work, admin, vm, description, memory=False) -> Snapshot:
    snapshot = work(
        lambda: snapshots.snapshot_create(
            vm_id=vm.pk,
            user=admin,
            description=description,
            disk_ids=[disk(vm).pk],
            save_memory=memory,
        )
    )
    ok(last_job(vm))
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.OK
    return snapshot


def preview(work, admin, vm, snapshot, **options) -> None:
    ok(
        work(
            lambda: snapshots.snapshot_preview(
                vm_id=vm.pk, snapshot_id=snapshot.pk, user=admin, **options
            )
        )
    )
    assert Snapshot.objects.get(pk=snapshot.pk).status == SnapshotStatus.IN_PREVIEW
    assert status(vm) == VMStatus.DOWN


def undo(work, admin, vm) -> None:
    ok(work(lambda: snapshots.snapshot_undo(vm_id=vm.pk, user=admin)))
    assert not SnapshotPreview.objects.filter(vm=vm).exists()


def delete(work, admin, vm, snapshot) -> None:
    ok(work(lambda: snapshots.snapshot_delete(vm_id=vm.pk, snapshot_id=snapshot.pk, user=admin)))
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()


# ---- tests -----------------------------------------------------------------------------------


def test_markers_through_preview_undo_clone_commit_and_delete(
    site, admin, work, conn, prefix, qemu_pool
):
    vm = create_vm(f"{prefix}-vm", site, admin, work, conn)
    base = disk(vm).volume_name
    write(path(conn, vm), "A")
    assert marker(path(conn, vm)) == "A"
    s1 = take(work, admin, vm, "S1")
    assert frozen(s1) == base and chain(conn, vm) == [disk(vm).volume_name, base]
    write(path(conn, vm), "B")
    s2 = take(work, admin, vm, "S2")
    write(path(conn, vm), "C")
    active = disk(vm).volume_name
    assert chain(conn, vm) == [active, frozen(s2), base]
    assert [marker(conn.get_volume(qemu_pool, v).path) for v in chain(conn, vm)] == list("CBA")

    # Preview S1: the VM's disk shows A; Undo: back to C.
    preview(work, admin, vm, s1)
    assert disk(vm).volume_name != active and chain(conn, vm)[1:] == [base]
    assert marker(path(conn, vm)) == "A"
    undo(work, admin, vm)
    assert disk(vm).volume_name == active
    assert marker(path(conn, vm)) == "C"

    # Clone from S1: a new VM whose own, flat volume holds A; the source is untouched.
    clone = work(
        lambda: snapshots.snapshot_clone(
            vm_id=vm.pk, snapshot_id=s1.pk, user=admin, name=f"{prefix}-clone"
        )
    )
    assert status(clone) == VMStatus.DOWN, Job.objects.get(kind="vm_clone").error
    assert backing_file(path(conn, clone)) is None
    assert marker(path(conn, clone)) == "A"
    assert conn.get_domain(str(clone.uuid)).state == DomainState.SHUTOFF
    assert Snapshot.objects.get(pk=s1.pk).status == SnapshotStatus.OK
    assert (disk(vm).volume_name, marker(path(conn, vm))) == (active, "C")

    # Preview S1 again and Commit: S2 is erased (row and volumes), the VM keeps A.
    preview(work, admin, vm, s1)
    previewed = disk(vm).volume_name
    gone = {frozen(s2), active}
    ok(work(lambda: snapshots.snapshot_commit(vm_id=vm.pk, user=admin)))
    assert not Snapshot.objects.filter(pk=s2.pk).exists()
    assert Snapshot.objects.get(pk=s1.pk).status == SnapshotStatus.OK
    assert not gone & volume_names(conn, qemu_pool)
    assert disk(vm).volume_name == previewed and chain(conn, vm) == [previewed, base]
    assert marker(path(conn, vm)) == "A"
    assert status(vm) == VMStatus.DOWN

    # S3, write D, delete S3 (Down: the active layer goes into S3's volume): D stays.
    s3 = take(work, admin, vm, "S3")
    write(path(conn, vm), "D")
    assert frozen(s3) == previewed
    delete(work, admin, vm, s3)
    assert disk(vm).volume_name == previewed and chain(conn, vm) == [previewed, base]
    assert marker(path(conn, vm)) == "D"
    assert conn.get_domain(str(vm.uuid)).state == DomainState.SHUTOFF
    assert status(vm) == VMStatus.DOWN
    assert marker(conn.get_volume(qemu_pool, frozen(s1)).path) == "A"  # S1's point is intact

    # Removing the VM removes its whole chain; the clone's volume stays.
    ok(work(lambda: vm_remove(vm_id=vm.pk, user=admin, remove_disks=True)))
    assert volume_names(conn, qemu_pool) == {disk(clone).volume_name}


@pytest.mark.parametrize("running", [False, True], ids=["down", "up"])
def test_delete_in_the_middle_of_the_chain(site, admin, work, conn, prefix, qemu_pool, running):
    vm = create_vm(f"{prefix}-vm", site, admin, work, conn)
    write(path(conn, vm), "A")
    s1 = take(work, admin, vm, "S1")
    write(path(conn, vm), "B")
    s2 = take(work, admin, vm, "S2")
    write(path(conn, vm), "C")
    active = disk(vm).volume_name
    base, middle = frozen(s1), frozen(s2)
    assert chain(conn, vm) == [active, middle, base]  # S1 <- S2 <- active
    if running:
        ok(work(lambda: vm_run(vm_id=vm.pk, user=admin)))

    delete(work, admin, vm, s1)  # the layer above S1's volume is merged down into it
    assert status(vm) == (VMStatus.UP if running else VMStatus.DOWN)
    assert chain(conn, vm) == [active, base]
    assert middle not in volume_names(conn, qemu_pool)
    assert frozen(s2) == base and disk(vm).volume_name == active
    if running:
        assert conn.get_domain(str(vm.uuid)).state == DomainState.RUNNING
        ok(work(lambda: vm_poweroff(vm_id=vm.pk, user=admin)))
    assert marker(conn.get_volume(qemu_pool, base).path) == "B"

    preview(work, admin, vm, s2)  # S2's point still reads B
    assert marker(path(conn, vm)) == "B"
    undo(work, admin, vm)
    assert marker(path(conn, vm)) == "C"  # and the active its marker

    # Then the newest (now only) snapshot: the active layer goes down into its volume.
    if running:
        ok(work(lambda: vm_run(vm_id=vm.pk, user=admin)))
    delete(work, admin, vm, s2)
    assert status(vm) == (VMStatus.UP if running else VMStatus.DOWN)
    assert disk(vm).volume_name == base and chain(conn, vm) == [base]
    assert volume_names(conn, qemu_pool) == {base}
    if running:
        ok(work(lambda: vm_poweroff(vm_id=vm.pk, user=admin)))
    assert marker(path(conn, vm)) == "C"


def test_live_snapshot_with_memory_and_run_restores_it(
    site, admin, work, conn, prefix, qemu_pool, libvirt_uri
):
    vm = create_vm(f"{prefix}-vm", site, admin, work, conn)
    write(path(conn, vm), "A")
    ok(work(lambda: vm_run(vm_id=vm.pk, user=admin)))
    s1 = take(work, admin, vm, "live", memory=True)
    assert status(vm) == VMStatus.UP
    assert conn.get_domain(str(vm.uuid)).state == DomainState.RUNNING
    pool, _, memory = s1.memory_volume.partition("/")
    assert pool == qemu_pool and conn.get_volume(pool, memory).allocation > 0
    base = frozen(s1)
    assert chain(conn, vm) == [disk(vm).volume_name, base]
    ok(work(lambda: vm_poweroff(vm_id=vm.pk, user=admin)))
    write(path(conn, vm), "B")  # after the snapshot

    preview(work, admin, vm, s1, memory=True)
    assert VirtualMachine.objects.get(pk=vm.pk).resume_memory_volume == s1.memory_volume
    assert marker(path(conn, vm)) == "A"
    previewed = path(conn, vm)
    run = ok(work(lambda: vm_run(vm_id=vm.pk, user=admin)))
    assert run.step == "Restoring the snapshot's memory"
    assert Event.objects.filter(job=run, phase=Phase.SUCCEEDED).exists()
    fresh = VirtualMachine.objects.get(pk=vm.pk)
    assert (fresh.status, fresh.resume_memory_volume) == (VMStatus.UP, "")
    assert conn.get_domain(str(vm.uuid)).state == DomainState.RUNNING
    blk = subprocess.run(
        ["virsh", "-c", libvirt_uri, "domblklist", str(vm.uuid)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert previewed in blk  # restored onto the previewed disk
    ok(work(lambda: vm_poweroff(vm_id=vm.pk, user=admin)))

    undo(work, admin, vm)
    assert marker(path(conn, vm)) == "B"
    assert memory in volume_names(conn, qemu_pool)  # the snapshot keeps its memory

    ok(work(lambda: vm_remove(vm_id=vm.pk, user=admin, remove_disks=True)))
    assert volume_names(conn, qemu_pool) == set()  # chain and memory, all gone
    with pytest.raises(VolumeNotFound):
        conn.get_volume(qemu_pool, memory)
