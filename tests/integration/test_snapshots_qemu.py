"""Snapshots on a real libvirtd with qemu: qcow2 chains, external snapshots, merges, restore.

Markers are written into the images with qemu-io (domain shut off) and read back with
`qemu-img dd -U` through a chain: each 512-byte sector of the first few holds one letter
(A, B ...) or zeros ("."), so a view of a volume reads like "AB.C".
"""

import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from helpers import MiB

import hypervisor
from hypervisor import DiskSpec, DomainNotFound, DomainSpec, DomainState, HypervisorError

pytestmark = pytest.mark.integration

SECTORS = 4


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60)


def write(path: str, sector: int, letter: str) -> None:
    """Fill 512-byte sector `sector` of the qcow2 image at `path` with `letter`."""
    run("qemu-io", "-f", "qcow2", "-c", f"write -P {ord(letter):#x} {sector * 512} 512", path)


def view(path: str, tmp_path: Path) -> str:
    """What the guest sees in the first sectors through the image's chain, e.g. "AB.."."""
    out = tmp_path / f"view-{uuid.uuid4().hex[:6]}.raw"
    run("qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", f"count={SECTORS}",
        f"if={path}", f"of={out}")  # fmt: skip
    data = out.read_bytes()
    out.unlink()
    letters = ""
    for n in range(SECTORS):
        sector = data[n * 512 : (n + 1) * 512]
        assert sector == sector[:1] * 512, f"sector {n} of {path} is not one letter"
        letters += chr(sector[0]) if sector[0] else "."
    return letters


def backing_file(path: str) -> str | None:
    info = json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)
    return info.get("backing-filename")


@pytest.fixture
def conn(libvirt_uri):
    return hypervisor.connect(libvirt_uri)


@pytest.fixture
def raw_conn(libvirt_uri):
    """A plain libvirt connection, to see the domain XML as libvirt has it."""
    own = libvirt.open(libvirt_uri)
    yield own
    own.close()


@pytest.fixture
def vm(conn, qemu_pool):
    """A shut-off 64 MiB VM (no OS) with disks vda (base.qcow2) and vdb (data.qcow2).

    Afterwards the domain is destroyed and undefined and every volume of the pool deleted,
    whatever happened.
    """
    conn.create_volume(qemu_pool, "base.qcow2", 16 * MiB, preallocate=False)
    conn.create_volume(qemu_pool, "data.qcow2", 16 * MiB, preallocate=False)
    spec = DomainSpec(
        uuid=str(uuid.uuid4()),
        name=f"vireo-it-snap-{uuid.uuid4().hex[:8]}",
        memory_mb=64,
        vcpus=1,
        disks=(DiskSpec(qemu_pool, "base.qcow2"), DiskSpec(qemu_pool, "data.qcow2", "vdb")),
    )
    info = conn.define_domain(spec)
    yield info
    for cleanup in (conn.destroy, conn.undefine_domain):
        try:
            cleanup(info.uuid)
        except HypervisorError:
            pass  # not running, or gone
    for volume in conn.list_volumes(qemu_pool):
        conn.delete_volume(qemu_pool, volume.name)


def sources(raw_conn, uuid_: str, *, inactive: bool = False) -> dict[str, list[str]]:
    """Disk target -> file names of its chain as the live (or persistent) XML spells it."""
    dom = raw_conn.lookupByUUIDString(uuid_)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
    result = {}
    for disk in ET.fromstring(xml).findall("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue  # the CD-ROM drive
        chain, node = [], disk
        while node is not None and node.find("source") is not None:
            chain.append(Path(node.find("source").get("file")).name)
            node = node.find("backingStore")
        result[disk.find("target").get("dev")] = chain
    return result


def path_of(conn, pool: str, name: str) -> str:
    return conn.get_volume(pool, name).path


def test_offline_snapshot_preview_and_back(conn, raw_conn, vm, qemu_pool, tmp_path):
    path = lambda name: path_of(conn, qemu_pool, name)  # noqa: E731
    write(path("base.qcow2"), 0, "A")

    conn.snapshot_disks(vm.uuid, {"vda": "s1.qcow2"})
    assert conn.get_domain(vm.uuid).state == DomainState.SHUTOFF
    assert conn.volume_chain(qemu_pool, "s1.qcow2") == ["s1.qcow2", "base.qcow2"]
    assert conn.volume_chain(qemu_pool, "base.qcow2") == ["base.qcow2"]
    assert sources(raw_conn, vm.uuid) == {"vda": ["s1.qcow2"], "vdb": ["data.qcow2"]}
    overlay = conn.get_volume(qemu_pool, "s1.qcow2")
    assert (overlay.format, overlay.capacity) == ("qcow2", 16 * MiB)
    assert backing_file(overlay.path) == path("base.qcow2")
    write(overlay.path, 0, "B")
    write(overlay.path, 1, "C")
    assert view(path("base.qcow2"), tmp_path) == "A..."
    assert view(overlay.path, tmp_path) == "BC.."

    # Preview: a new overlay on the snapshot's (frozen) volume; the guest sees A.
    conn.create_overlay(qemu_pool, "preview.qcow2", "base.qcow2")
    conn.set_disk_sources(vm.uuid, {"vda": (qemu_pool, "preview.qcow2")})
    assert sources(raw_conn, vm.uuid)["vda"] == ["preview.qcow2"]
    assert view(path("preview.qcow2"), tmp_path) == "A..."
    conn.start(vm.uuid)  # libvirt follows the chain from the qcow2 headers
    assert sources(raw_conn, vm.uuid)["vda"] == ["preview.qcow2", "base.qcow2"]
    with pytest.raises(HypervisorError, match="shut off"):
        conn.set_disk_sources(vm.uuid, {"vda": (qemu_pool, "s1.qcow2")})
    conn.destroy(vm.uuid)

    # Undo: back to the active layer, which still holds B and C.
    conn.set_disk_sources(vm.uuid, {"vda": (qemu_pool, "s1.qcow2")})
    conn.delete_volume(qemu_pool, "preview.qcow2")
    assert sources(raw_conn, vm.uuid)["vda"] == ["s1.qcow2"]
    assert view(path("s1.qcow2"), tmp_path) == "BC.."
    assert view(path("base.qcow2"), tmp_path) == "A..."

    with pytest.raises(HypervisorError, match="memory"):
        conn.snapshot_disks(vm.uuid, {"vda": "s2.qcow2"}, memory_volume=(qemu_pool, "s2.mem"))
    with pytest.raises(HypervisorError, match="already exists"):
        conn.snapshot_disks(vm.uuid, {"vda": "base.qcow2"})
    with pytest.raises(HypervisorError, match="no file-backed disk vdz"):
        conn.snapshot_disks(vm.uuid, {"vdz": "s2.qcow2"})
    assert {v.name for v in conn.list_volumes(qemu_pool)} == {
        "base.qcow2",
        "data.qcow2",
        "s1.qcow2",
    }


def test_live_snapshot_with_memory_then_restore(conn, raw_conn, vm, qemu_pool, tmp_path):
    path = lambda name: path_of(conn, qemu_pool, name)  # noqa: E731
    write(path("base.qcow2"), 0, "A")
    conn.start(vm.uuid)

    conn.snapshot_disks(vm.uuid, {"vda": "s1.qcow2"}, memory_volume=(qemu_pool, "s1.mem"))
    assert conn.get_domain(vm.uuid).state == DomainState.RUNNING
    assert sources(raw_conn, vm.uuid) == {
        "vda": ["s1.qcow2", "base.qcow2"],
        "vdb": ["data.qcow2"],  # snapshot='no'
    }
    # The persistent definition follows, without libvirt's <backingStore> chain.
    assert sources(raw_conn, vm.uuid, inactive=True) == {
        "vda": ["s1.qcow2"],
        "vdb": ["data.qcow2"],
    }
    names = {v.name for v in conn.list_volumes(qemu_pool)}
    assert {"s1.qcow2", "s1.mem"} <= names
    assert conn.get_volume(qemu_pool, "s1.mem").allocation > 0
    assert conn.volume_chain(qemu_pool, "s1.qcow2") == ["s1.qcow2", "base.qcow2"]

    # A disk-only live snapshot of vdb alone.
    conn.snapshot_disks(vm.uuid, {"vdb": "d1.qcow2"})
    assert conn.get_domain(vm.uuid).state == DomainState.RUNNING
    assert sources(raw_conn, vm.uuid)["vdb"] == ["d1.qcow2", "data.qcow2"]
    assert sources(raw_conn, vm.uuid, inactive=True)["vdb"] == ["d1.qcow2"]
    conn.destroy(vm.uuid)

    # Preview of the snapshot with its memory: an overlay on the frozen volume, then restore.
    write(path("s1.qcow2"), 0, "B")
    conn.create_overlay(qemu_pool, "preview.qcow2", "base.qcow2")
    conn.set_disk_sources(vm.uuid, {"vda": (qemu_pool, "preview.qcow2")})
    with pytest.raises(HypervisorError):
        conn.restore_memory(vm.uuid, qemu_pool, "missing.mem")
    conn.restore_memory(vm.uuid, qemu_pool, "s1.mem")
    assert conn.get_domain(vm.uuid).state == DomainState.RUNNING
    assert sources(raw_conn, vm.uuid)["vda"] == ["preview.qcow2", "base.qcow2"]
    assert view(path("preview.qcow2"), tmp_path) == "A..."
    with pytest.raises(HypervisorError, match="shut off"):
        conn.restore_memory(vm.uuid, qemu_pool, "s1.mem")
    conn.destroy(vm.uuid)
    assert view(path("s1.qcow2"), tmp_path) == "B..."


def test_merges_keep_the_data(conn, raw_conn, vm, qemu_pool, tmp_path):
    """Middle and active layers, shut off (started paused) and running: base <- s1 .. s4."""
    path = lambda name: path_of(conn, qemu_pool, name)  # noqa: E731
    write(path("base.qcow2"), 0, "A")
    write(path("base.qcow2"), 1, "A")
    for n, letter in enumerate("BCDE", start=1):
        conn.snapshot_disks(vm.uuid, {"vda": f"s{n}.qcow2"})
        write(path(f"s{n}.qcow2"), n % SECTORS, letter)  # s4 overwrites sector 0
    chain = ["s4.qcow2", "s3.qcow2", "s2.qcow2", "s1.qcow2", "base.qcow2"]
    assert conn.volume_chain(qemu_pool, "s4.qcow2") == chain
    expected = {
        "base.qcow2": "AA..",
        "s1.qcow2": "AB..",
        "s2.qcow2": "ABC.",
        "s3.qcow2": "ABCD",
        "s4.qcow2": "EBCD",
    }
    assert {name: view(path(name), tmp_path) for name in chain} == expected

    def merge(top: str, base: str) -> list[tuple[int, int]]:
        calls: list[tuple[int, int]] = []
        conn.merge_volumes(vm.uuid, "vda", top=top, base=base, progress=lambda *a: calls.append(a))
        assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
        chain.remove(top)
        del expected[top]
        assert conn.volume_chain(qemu_pool, chain[0]) == chain
        assert top not in {v.name for v in conn.list_volumes(qemu_pool)}
        return calls

    # Shut off, a middle layer: s1 into base (the domain is started paused and destroyed).
    merge("s1.qcow2", "base.qcow2")
    expected["base.qcow2"] = "AB.."
    assert {name: view(path(name), tmp_path) for name in chain} == expected
    assert conn.get_domain(vm.uuid).state == DomainState.SHUTOFF
    assert sources(raw_conn, vm.uuid)["vda"] == ["s4.qcow2"]
    assert backing_file(path("s2.qcow2")) == path("base.qcow2")

    with pytest.raises(HypervisorError, match="not backed by"):
        conn.merge_volumes(vm.uuid, "vda", top="s4.qcow2", base="s2.qcow2")
    conn.create_overlay(qemu_pool, "side.qcow2", "s2.qcow2")  # a second child of s2
    with pytest.raises(HypervisorError, match="side.qcow2 also depend"):
        conn.merge_volumes(vm.uuid, "vda", top="s3.qcow2", base="s2.qcow2")
    conn.delete_volume(qemu_pool, "side.qcow2")

    # Running, a middle layer: s3 into s2.
    conn.start(vm.uuid)
    merge("s3.qcow2", "s2.qcow2")
    expected["s2.qcow2"] = "ABCD"
    assert conn.get_domain(vm.uuid).state == DomainState.RUNNING
    assert sources(raw_conn, vm.uuid)["vda"] == ["s4.qcow2", "s2.qcow2", "base.qcow2"]
    assert {name: view(path(name), tmp_path) for name in chain} == expected

    # Running, the active layer: s4 into s2, and the domain pivots onto s2.
    merge("s4.qcow2", "s2.qcow2")
    expected["s2.qcow2"] = "EBCD"
    assert conn.get_domain(vm.uuid).state == DomainState.RUNNING
    assert sources(raw_conn, vm.uuid)["vda"] == ["s2.qcow2", "base.qcow2"]
    assert sources(raw_conn, vm.uuid, inactive=True)["vda"] == ["s2.qcow2"]
    conn.destroy(vm.uuid)
    assert {name: view(path(name), tmp_path) for name in chain} == expected

    # Shut off, the active layer: s2 into base; the definition now names base.
    merge("s2.qcow2", "base.qcow2")
    expected["base.qcow2"] = "EBCD"
    assert conn.get_domain(vm.uuid).state == DomainState.SHUTOFF
    assert sources(raw_conn, vm.uuid)["vda"] == ["base.qcow2"]
    assert {name: view(path(name), tmp_path) for name in chain} == expected
    assert chain == ["base.qcow2"]
    conn.start(vm.uuid)  # and it still boots from it
    assert sources(raw_conn, vm.uuid)["vda"] == ["base.qcow2"]


def test_clone_of_a_mid_chain_volume_is_standalone(conn, vm, qemu_pool, tmp_path):
    path = lambda name: path_of(conn, qemu_pool, name)  # noqa: E731
    write(path("base.qcow2"), 0, "A")
    conn.snapshot_disks(vm.uuid, {"vda": "s1.qcow2"})
    write(path("s1.qcow2"), 1, "B")
    conn.snapshot_disks(vm.uuid, {"vda": "s2.qcow2"})
    write(path("s2.qcow2"), 2, "C")

    conn.start(vm.uuid)  # the frozen layers stay readable while the domain runs
    copy = conn.clone_volume(qemu_pool, "s1.qcow2", "copy.qcow2")
    assert (copy.format, copy.capacity) == ("qcow2", 16 * MiB)
    assert backing_file(copy.path) is None  # createXMLFrom flattened the chain
    assert conn.volume_chain(qemu_pool, "copy.qcow2") == ["copy.qcow2"]
    assert view(copy.path, tmp_path) == "AB.."
    assert view(path("s2.qcow2"), tmp_path) == "ABC."


def test_unknown_domain(conn, qemu_pool):
    with pytest.raises(DomainNotFound):
        conn.snapshot_disks(str(uuid.uuid4()), {"vda": "x.qcow2"})
