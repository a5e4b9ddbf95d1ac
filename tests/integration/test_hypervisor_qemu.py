"""The hypervisor layer on a real libvirtd with qemu: a tiny VM without an OS (SeaBIOS idles)."""

import os
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest
from helpers import MiB
from libvirtd import ADMIN_URI

import hypervisor
from hypervisor import (
    Connection,
    DiskSpec,
    DomainNotFound,
    DomainSpec,
    DomainState,
    HostUnreachable,
    HypervisorError,
    VolumeNotFound,
)

pytestmark = pytest.mark.integration


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


def virsh(uri: str, *args: str) -> str:
    done = subprocess.run(
        ["virsh", "-c", uri, *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


@pytest.fixture
def conn(libvirt_uri):
    """The shared Connection to the real libvirtd."""
    return hypervisor.connect(libvirt_uri)


@pytest.fixture
def tiny_vm(conn, qemu_pool):
    """A defined VM (64 MiB, 1 vCPU, 16 MiB thin disk, no OS); destroyed and removed after."""
    disk = conn.create_volume(qemu_pool, "disk.qcow2", 16 * MiB, preallocate=False)
    spec = DomainSpec(
        uuid=str(uuid.uuid4()),
        name=f"vireo-it-{uuid.uuid4().hex[:8]}",
        memory_mb=64,
        vcpus=1,
        disks=(DiskSpec(qemu_pool, disk.name),),
        description="integration test VM",
    )
    info = conn.define_domain(spec)
    yield info
    try:
        conn.destroy(info.uuid)
    except HypervisorError:
        pass  # not running, or already gone
    try:
        conn.undefine_domain(info.uuid)
    except DomainNotFound:
        pass
    conn.delete_volume(qemu_pool, disk.name)


def test_host_info(conn):
    host = conn.host_info()
    assert host.hypervisor.startswith("QEMU ")
    assert host.cpus >= 1 and host.memory_mb > 0
    assert host.cpu_model and host.hostname


def test_host_cpu_times_follow_a_busy_cpu(conn):
    """libvirt's node CPU counters (what the monitor's CPU usage, and so load balancing, is
    measured from): all CPUs' time passes, and a process spinning on one CPU shows."""
    cpus = conn.host_info().cpus
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        first = conn.host_cpu_times()
        time.sleep(1.0)
        second = conn.host_cpu_times()
    finally:
        spinner.kill()
        spinner.wait()
    elapsed_ns = (second.total_ns - first.total_ns) / cpus
    assert 0.7e9 < elapsed_ns < 1.5e9  # about the second slept, on each CPU
    assert second.usage_since(first) >= 80 // cpus  # one CPU of `cpus` busy (others add)


def test_vm_lifecycle(conn, tiny_vm, libvirt_uri):
    uuid_ = tiny_vm.uuid
    assert (tiny_vm.state, tiny_vm.persistent) == (DomainState.SHUTOFF, True)
    assert (tiny_vm.memory_mb, tiny_vm.vcpus) == (64, 1)
    xml = virsh(libvirt_uri, "dumpxml", uuid_)
    assert f"<domain type='{'kvm' if kvm_usable() else 'qemu'}'" in xml
    assert "<description>integration test VM</description>" in xml
    assert "<driver name='qemu' type='qcow2'/>" in xml

    conn.start(uuid_)
    assert conn.get_domain(uuid_).state == DomainState.RUNNING

    conn.managed_save(uuid_)
    saved = conn.get_domain(uuid_)
    assert (saved.state, saved.has_managed_save) == (DomainState.SHUTOFF, True)
    assert any(d.uuid == uuid_ and d.has_managed_save for d in conn.list_domains())

    conn.start(uuid_)  # restores the image
    restored = conn.get_domain(uuid_)
    assert (restored.state, restored.has_managed_save) == (DomainState.RUNNING, False)

    conn.pause(uuid_)
    assert conn.get_domain(uuid_).state == DomainState.PAUSED
    conn.resume(uuid_)
    assert conn.wait_for_state(uuid_, {DomainState.RUNNING}, timeout=10) is not None

    conn.destroy(uuid_)
    assert conn.get_domain(uuid_).state == DomainState.SHUTOFF
    conn.undefine_domain(uuid_)
    with pytest.raises(DomainNotFound) as exc:
        conn.get_domain(uuid_)
    assert exc.value.message.startswith("Domain not found")


def test_undefine_removes_the_managed_save_image(conn, tiny_vm):
    conn.start(tiny_vm.uuid)
    conn.managed_save(tiny_vm.uuid)
    with pytest.raises(HypervisorError, match="managed save image"):
        conn.undefine_domain(tiny_vm.uuid, remove_managed_save=False)
    conn.undefine_domain(tiny_vm.uuid)
    with pytest.raises(DomainNotFound):
        conn.get_domain(tiny_vm.uuid)


def test_volumes_on_a_dir_pool(conn, qemu_pool):
    thin = conn.create_volume(qemu_pool, "thin.qcow2", 16 * MiB, preallocate=False)
    assert (thin.format, thin.capacity) == ("qcow2", 16 * MiB)
    assert thin.allocation < 1 * MiB  # qcow2 metadata only
    with open(thin.path, "rb") as image:
        assert image.read(4) == b"QFI\xfb"

    thick = conn.create_volume(qemu_pool, "thick.raw", 16 * MiB, preallocate=True)
    assert (thick.format, thick.capacity) == ("raw", 16 * MiB)
    assert thick.allocation >= 16 * MiB
    assert os.path.getsize(thick.path) == 16 * MiB

    pool = conn.get_pool(qemu_pool)
    assert (pool.type, pool.active) == ("dir", True)
    assert os.path.samefile(pool.path, os.path.dirname(thin.path))
    assert pool.capacity > 0 and pool.available <= pool.capacity
    assert any(p.name == qemu_pool for p in conn.list_pools())

    calls = []
    thin_copy = conn.clone_volume(
        qemu_pool, "thin.qcow2", "thin-copy.qcow2", lambda *a: calls.append(a)
    )
    assert (thin_copy.format, thin_copy.capacity) == ("qcow2", 16 * MiB)
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1]
    thick_copy = conn.clone_volume(qemu_pool, "thick.raw", "thick-copy.raw")
    assert (thick_copy.format, thick_copy.allocation >= 16 * MiB) == ("raw", True)

    names = {v.name for v in conn.list_volumes(qemu_pool)}
    assert names == {"thin.qcow2", "thick.raw", "thin-copy.qcow2", "thick-copy.raw"}
    for name in names:
        conn.delete_volume(qemu_pool, name)
    assert conn.list_volumes(qemu_pool) == []
    with pytest.raises(VolumeNotFound):
        conn.get_volume(qemu_pool, "thin.qcow2")
    with pytest.raises(VolumeNotFound):
        conn.delete_volume(qemu_pool, "thin.qcow2")


def test_clone_progress_follows_a_real_copy(conn, qemu_pool):
    source = conn.create_volume(qemu_pool, "data.qcow2", 512 * MiB, preallocate=False)
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x5a 0 384M", source.path], check=True, capture_output=True
    )
    calls = []
    conn.clone_volume(qemu_pool, "data.qcow2", "data-copy.qcow2", lambda *a: calls.append(a))
    total = conn.get_volume(qemu_pool, "data.qcow2").allocation
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and all(t == total for _, t in calls)
    for name in ("data.qcow2", "data-copy.qcow2"):
        conn.delete_volume(qemu_pool, name)


def test_lifecycle_event_for_a_virsh_suspend(libvirt_uri, tiny_vm):
    own = Connection(libvirt_uri)  # not the shared one: its callbacks go away with it
    seen, suspended = [], threading.Event()

    def record(event):
        if event.uuid == tiny_vm.uuid:
            seen.append(event.event)
            if event.event == "suspended":
                suspended.set()

    try:
        own.on_lifecycle(record)
        own.start(tiny_vm.uuid)
        virsh(libvirt_uri, "suspend", tiny_vm.name)
        assert suspended.wait(10), seen
        assert "started" in seen  # qemu sends "resumed" (the CPUs start) before "started"
        assert own.get_domain(tiny_vm.uuid).state == DomainState.PAUSED
    finally:
        own.close()


def test_lost_connection(libvirt_uri):
    own = Connection(libvirt_uri)
    reasons, lost = [], threading.Event()
    own.on_close(lambda reason: (reasons.append(reason), lost.set()))
    own.list_domains()
    clients = re.findall(r"^\s*(\d+)\s", virsh_admin("srv-clients-list", "libvirtd"), re.M)
    mine = re.compile(rf"^unix_process_id:\s*{os.getpid()}$", re.M)
    ours = [c for c in clients if mine.search(virsh_admin("client-info", "libvirtd", c))]
    try:
        virsh_admin("client-disconnect", "libvirtd", max(ours, key=int))  # the newest is `own`
        assert lost.wait(10)
        assert reasons == ["eof"]
        assert not own.is_alive()
        with pytest.raises(HostUnreachable):
            own.list_domains()
    finally:
        own.close()


def virsh_admin(*args: str) -> str:
    done = subprocess.run(
        ["virt-admin", "-c", ADMIN_URI, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout
