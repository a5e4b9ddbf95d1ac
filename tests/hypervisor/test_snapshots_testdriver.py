"""Snapshot support on libvirt's test driver (chains etc. emulated by hypervisor/testdriver.py)."""

import libvirt
import pytest
from helpers import MiB
from hypervisor_nodes import OFF_UUID, PAUSED_UUID, RUNNING_UUID, GiB, spec

from hypervisor import DiskSpec, DomainNotFound, DomainState, HypervisorError, VolumeNotFound
from hypervisor.domainxml import disk_files

VM_UUID = "00000000-0000-4000-8000-0000000000b1"


def files(conn, uuid: str) -> dict[str, str]:
    """Target -> volume name of the domain's persistent disks (the test driver's live XML of a
    running domain cannot change, so the emulation keeps the current disks there)."""
    dom = conn._conn.lookupByUUIDString(uuid)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return {target: path.rsplit("/", 1)[1] for target, path in disk_files(xml).items()}


def names(conn) -> set[str]:
    return {v.name for v in conn.list_volumes("data")}


@pytest.fixture
def vm(conn):
    """A shut-off domain with vda = vm.qcow2 (4 GiB) and vdb = base.raw."""
    conn.create_volume("data", "vm.qcow2", 4 * GiB, preallocate=False)
    disks = (DiskSpec("data", "vm.qcow2"), DiskSpec("data", "base.raw", target="vdb"))
    return conn.define_domain(spec(VM_UUID, "snappy", disks))


def test_overlays_make_chains(conn):
    overlay = conn.create_overlay("data", "o1.qcow2", "web.qcow2")
    assert (overlay.format, overlay.capacity) == ("qcow2", 10 * GiB)
    conn.create_overlay("data", "o2.qcow2", "o1.qcow2")
    raw_top = conn.create_overlay("data", "r1.qcow2", "base.raw")
    assert (raw_top.format, raw_top.capacity) == ("qcow2", 2 * GiB)
    assert {"o1.qcow2", "o2.qcow2", "r1.qcow2"} <= names(conn)
    assert conn.volume_chain("data", "o2.qcow2") == ["o2.qcow2", "o1.qcow2", "web.qcow2"]
    assert conn.volume_chain("data", "r1.qcow2") == ["r1.qcow2", "base.raw"]
    assert conn.volume_chain("data", "web.qcow2") == ["web.qcow2"]

    with pytest.raises(VolumeNotFound):
        conn.create_overlay("data", "o3.qcow2", "missing.qcow2")
    with pytest.raises(HypervisorError, match="already"):
        conn.create_overlay("data", "o1.qcow2", "web.qcow2")
    with pytest.raises(VolumeNotFound):
        conn.volume_chain("data", "missing.qcow2")

    conn.delete_volume("data", "o1.qcow2")  # the chain ends where a file is missing
    assert conn.volume_chain("data", "o2.qcow2") == ["o2.qcow2"]


def test_clone_of_an_overlay_is_standalone(conn):
    conn.create_overlay("data", "o1.qcow2", "web.qcow2")
    copy = conn.clone_volume("data", "o1.qcow2", "copy.qcow2")
    assert (copy.format, copy.capacity) == ("qcow2", 10 * GiB)
    assert conn.volume_chain("data", "copy.qcow2") == ["copy.qcow2"]


def test_snapshot_of_a_shut_off_domain(conn, vm):
    conn.snapshot_disks(VM_UUID, {"vda": "s1.qcow2"})
    assert conn.get_domain(VM_UUID).state == DomainState.SHUTOFF
    assert files(conn, VM_UUID) == {"vda": "s1.qcow2", "vdb": "base.raw"}
    assert conn.volume_chain("data", "s1.qcow2") == ["s1.qcow2", "vm.qcow2"]

    conn.snapshot_disks(VM_UUID, {"vda": "s2.qcow2", "vdb": "b1.qcow2"})
    assert files(conn, VM_UUID) == {"vda": "s2.qcow2", "vdb": "b1.qcow2"}
    assert conn.volume_chain("data", "s2.qcow2") == ["s2.qcow2", "s1.qcow2", "vm.qcow2"]
    assert conn.volume_chain("data", "b1.qcow2") == ["b1.qcow2", "base.raw"]


def test_snapshot_errors_leave_nothing_behind(conn, vm):
    before = names(conn)
    with pytest.raises(HypervisorError, match="memory"):
        conn.snapshot_disks(VM_UUID, {"vda": "s1.qcow2"}, memory_volume=("data", "s1.mem"))
    with pytest.raises(HypervisorError, match="no file-backed disk vdz"):
        conn.snapshot_disks(VM_UUID, {"vdz": "s1.qcow2"})
    with pytest.raises(HypervisorError, match="already exists"):
        conn.snapshot_disks(VM_UUID, {"vda": "s1.qcow2", "vdb": "web.qcow2"})
    with pytest.raises(HypervisorError):  # the second overlay fails: the first is removed
        conn.snapshot_disks(VM_UUID, {"vda": "same.qcow2", "vdb": "same.qcow2"})
    with pytest.raises(DomainNotFound):
        conn.snapshot_disks("00000000-0000-4000-8000-0000000000ff", {"vda": "s1.qcow2"})
    assert names(conn) == before
    assert files(conn, VM_UUID) == {"vda": "vm.qcow2", "vdb": "base.raw"}
    conn.snapshot_disks(VM_UUID, {})  # nothing to do
    assert names(conn) == before


def test_snapshot_of_a_running_domain_with_memory(conn):
    used = conn.get_pool("data").allocation
    conn.snapshot_disks(RUNNING_UUID, {"vda": "s1.qcow2"}, memory_volume=("data", "s1.mem"))
    assert conn.get_domain(RUNNING_UUID).state == DomainState.RUNNING
    assert files(conn, RUNNING_UUID) == {"vda": "s1.qcow2"}
    assert conn.volume_chain("data", "s1.qcow2") == ["s1.qcow2", "web.qcow2"]
    memory = conn.get_volume("data", "s1.mem")
    assert (memory.format, memory.capacity) == ("raw", 512 * MiB)
    assert conn.get_pool("data").allocation == used + memory.allocation

    conn.snapshot_disks(PAUSED_UUID, {}, memory_volume=("data", "db.mem"))  # no disks at all
    assert conn.get_domain(PAUSED_UUID).state == DomainState.PAUSED
    assert "db.mem" in names(conn)


def test_restore_memory(conn):
    conn.snapshot_disks(RUNNING_UUID, {"vda": "s1.qcow2"}, memory_volume=("data", "s1.mem"))
    with pytest.raises(HypervisorError, match="shut off"):
        conn.restore_memory(RUNNING_UUID, "data", "s1.mem")
    conn.destroy(RUNNING_UUID)
    with pytest.raises(VolumeNotFound):
        conn.restore_memory(RUNNING_UUID, "data", "missing.mem")
    conn.create_overlay("data", "preview.qcow2", "web.qcow2")
    conn.set_disk_sources(RUNNING_UUID, {"vda": ("data", "preview.qcow2")})
    conn.restore_memory(RUNNING_UUID, "data", "s1.mem")
    assert conn.get_domain(RUNNING_UUID).state == DomainState.RUNNING
    assert files(conn, RUNNING_UUID) == {"vda": "preview.qcow2"}


def test_set_disk_sources(conn, vm):
    conn.snapshot_disks(VM_UUID, {"vda": "s1.qcow2"})
    conn.create_overlay("data", "preview.qcow2", "vm.qcow2")
    conn.set_disk_sources(VM_UUID, {"vda": ("data", "preview.qcow2")})
    assert files(conn, VM_UUID) == {"vda": "preview.qcow2", "vdb": "base.raw"}
    conn.set_disk_sources(VM_UUID, {"vda": ("data", "s1.qcow2"), "vdb": ("data", "base.raw")})
    assert files(conn, VM_UUID) == {"vda": "s1.qcow2", "vdb": "base.raw"}
    dom = conn._conn.lookupByUUIDString(VM_UUID)
    assert "type='qcow2'" in dom.XMLDesc(0) and "type='raw'" in dom.XMLDesc(0)

    with pytest.raises(VolumeNotFound):
        conn.set_disk_sources(VM_UUID, {"vda": ("data", "missing.qcow2")})
    with pytest.raises(HypervisorError, match="no disk vdz"):
        conn.set_disk_sources(VM_UUID, {"vdz": ("data", "s1.qcow2")})
    with pytest.raises(HypervisorError, match="shut off"):
        conn.set_disk_sources(RUNNING_UUID, {"vda": ("data", "web.qcow2")})
    with pytest.raises(DomainNotFound):
        conn.set_disk_sources("00000000-0000-4000-8000-0000000000ff", {})
    assert conn.get_domain(OFF_UUID).state == DomainState.SHUTOFF


def test_merge_a_middle_layer_then_the_active_one(conn, vm):
    for name in ("s1.qcow2", "s2.qcow2"):
        conn.snapshot_disks(VM_UUID, {"vda": name})
    assert conn.volume_chain("data", "s2.qcow2") == ["s2.qcow2", "s1.qcow2", "vm.qcow2"]
    calls = []
    conn.merge_volumes(
        VM_UUID, "vda", top="s1.qcow2", base="vm.qcow2", progress=lambda *a: calls.append(a)
    )
    assert calls == [(0, 4 * GiB), (4 * GiB, 4 * GiB)]
    assert conn.volume_chain("data", "s2.qcow2") == ["s2.qcow2", "vm.qcow2"]
    assert "s1.qcow2" not in names(conn)
    assert files(conn, VM_UUID)["vda"] == "s2.qcow2"

    conn.merge_volumes(VM_UUID, "vda", top="s2.qcow2", base="vm.qcow2")
    assert files(conn, VM_UUID)["vda"] == "vm.qcow2"
    assert conn.volume_chain("data", "vm.qcow2") == ["vm.qcow2"]
    assert "s2.qcow2" not in names(conn)
    assert conn.get_domain(VM_UUID).state == DomainState.SHUTOFF


def test_merge_on_a_running_domain(conn):
    conn.snapshot_disks(RUNNING_UUID, {"vda": "s1.qcow2"})
    conn.snapshot_disks(RUNNING_UUID, {"vda": "s2.qcow2"})
    conn.merge_volumes(RUNNING_UUID, "vda", top="s2.qcow2", base="s1.qcow2")
    assert conn.get_domain(RUNNING_UUID).state == DomainState.RUNNING
    assert files(conn, RUNNING_UUID) == {"vda": "s1.qcow2"}
    assert conn.volume_chain("data", "s1.qcow2") == ["s1.qcow2", "web.qcow2"]
    conn.merge_volumes(RUNNING_UUID, "vda", top="s1.qcow2", base="web.qcow2")
    assert files(conn, RUNNING_UUID) == {"vda": "web.qcow2"}
    assert {"s1.qcow2", "s2.qcow2"}.isdisjoint(names(conn))


def test_merge_errors(conn, vm):
    conn.snapshot_disks(VM_UUID, {"vda": "s1.qcow2"})
    conn.snapshot_disks(VM_UUID, {"vda": "s2.qcow2"})
    with pytest.raises(HypervisorError, match="not backed by"):
        conn.merge_volumes(VM_UUID, "vda", top="s2.qcow2", base="vm.qcow2")
    with pytest.raises(HypervisorError, match="not backed by"):
        conn.merge_volumes(VM_UUID, "vda", top="web.qcow2", base="vm.qcow2")
    with pytest.raises(HypervisorError, match="no file-backed disk vdz"):
        conn.merge_volumes(VM_UUID, "vdz", top="s1.qcow2", base="vm.qcow2")
    conn.create_overlay("data", "preview.qcow2", "vm.qcow2")  # vm.qcow2 has two children
    with pytest.raises(HypervisorError, match="preview.qcow2 also depend"):
        conn.merge_volumes(VM_UUID, "vda", top="s1.qcow2", base="vm.qcow2")
    conn.create_overlay("data", "side.qcow2", "s1.qcow2")  # so has s1.qcow2
    with pytest.raises(HypervisorError, match="side.qcow2 also depend"):
        conn.merge_volumes(VM_UUID, "vda", top="s2.qcow2", base="s1.qcow2")
    assert conn.volume_chain("data", "s2.qcow2") == ["s2.qcow2", "s1.qcow2", "vm.qcow2"]
