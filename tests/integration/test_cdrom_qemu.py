"""Boot Options on a real libvirtd with qemu (KVM when present): Run Once boots a guest from
a CD (iPXE's ISO, built at test time: tests/integration/isos.py) while its saved configuration
stays, and the next Run uses the saved one; Change CD inserts and ejects on the running guest,
checked against its live XML. Every domain, pool and volume made is removed afterwards."""

import time
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest
from factories import ClusterFactory, HostFactory, StorageDomainFactory
from helpers import MiB
from isos import BOOT_MARKER, iso_into_pool
from libvirtd import make_pool, remove_pool

from portal.kernel.models import Job, JobStatus
from storage.choices import DomainFunction, PoolStatus
from storage.models import IsoImage, StorageDomainHost
from vms import cdrom
from vms.choices import HostStatus, VMStatus
from vms.models import VirtualMachine
from vms.services import vm_create, vm_poweroff, vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def iso_pool(libvirt_uri, tmp_path):
    """A dir pool that is the ISO domain's pool on the host, holding the bootable ISO."""
    path = tmp_path / "iso"
    name = make_pool(libvirt_uri, f"vireo-it-iso-{uuid.uuid4().hex[:8]}", path)
    iso_into_pool(path, "ipxe.iso")
    iso_into_pool(path, "tools.iso")  # the same bytes, marked as the guest tools ISO
    raw = libvirt.open(libvirt_uri)
    try:
        raw.storagePoolLookupByName(name).refresh(0)
    finally:
        raw.close()
    yield name
    remove_pool(libvirt_uri, name)


@pytest.fixture
def site(libvirt_uri, qemu_pool, iso_pool, prefix):
    cluster = ClusterFactory(shutdown_timeout=2)
    host = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP)
    data = StorageDomainFactory(data_center=cluster.data_center, pool_name=qemu_pool)
    iso = StorageDomainFactory(
        data_center=cluster.data_center, pool_name=iso_pool, domain_function=DomainFunction.ISO
    )
    StorageDomainHost.objects.create(domain=iso, host=host, status=PoolStatus.ACTIVE)
    images = {
        "ipxe": IsoImage.objects.create(domain=iso, name="ipxe.iso", size_bytes=2 * MiB),
        "tools": IsoImage.objects.create(
            domain=iso, name="tools.iso", size_bytes=2 * MiB, guest_tools=True
        ),
    }
    return cluster, host, data, images


def ok(job) -> Job:
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, f"{job.kind}: {job.error}"
    return job


def create_vm(site, admin, work, name) -> VirtualMachine:
    """A tiny VM (64 MB, a blank 16 MiB disk: nothing on it boots) made through Vireo."""
    cluster, _host, data, _images = site
    vm = work(
        lambda: vm_create(
            user=admin,
            name=name,
            cluster_id=cluster.pk,
            memory_mb=64,
            vcpus=1,
            disk_bytes=16 * MiB,
            storage_domain_id=data.pk,
        )
    )
    vm.refresh_from_db()
    assert vm.status == VMStatus.DOWN
    return vm


def live(conn, vm, *, inactive=False) -> ET.Element:
    dom = conn._conn.lookupByUUIDString(str(vm.uuid))
    return ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))


def cdrom_file(root: ET.Element) -> str:
    (drive,) = [d for d in root.findall("devices/disk") if d.get("device") == "cdrom"]
    source = drive.find("source")
    return source.get("file", "") if source is not None else ""


def boot(root: ET.Element) -> list[str]:
    return [b.get("dev") for b in root.findall("os/boot")]


def guest_memory_holds(conn, vm, wanted: bytes, timeout: float = 30.0) -> bool:
    """Whether `wanted` shows in the guest's physical memory within `timeout` (read 64 KiB at a
    time from the bottom up: a boot loader is loaded low)."""
    dom = conn._conn.lookupByUUIDString(str(vm.uuid))
    size = dom.info()[1] * 1024  # maximum memory, KiB
    chunk = 64 * 1024
    deadline = time.monotonic() + timeout
    while True:
        for start in range(0, size, chunk):
            length = min(chunk + len(wanted), size - start)
            data = dom.memoryPeek(start, length, libvirt.VIR_MEMORY_PHYSICAL)
            if wanted in data:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def test_run_once_boots_from_the_cd_and_the_next_run_uses_the_saved_configuration(
    admin, work, site, conn, prefix
):
    _cluster, _host, _data, images = site
    ipxe = images["ipxe"]
    vm = create_vm(site, admin, work, f"{prefix}-once")
    ipxe_path = conn.get_volume(ipxe.domain.pool_name, ipxe.name).path

    ok(
        work(
            lambda: cdrom.vm_run_once(
                vm_id=vm.pk, user=admin, cd_image=ipxe.pk, boot_sequence="cdrom,hd,network"
            )
        )
    )
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    running = live(conn, vm)
    assert cdrom_file(running) == ipxe_path
    assert boot(running) == ["cdrom", "hd", "network"]
    # It booted from the CD: the CD's boot loader is in the guest's memory.
    assert guest_memory_holds(conn, vm, BOOT_MARKER)
    # Meanwhile the definition it starts from next is the saved configuration.
    saved = live(conn, vm, inactive=True)
    assert (cdrom_file(saved), boot(saved)) == ("", ["hd"])
    assert (vm.cd_image_id, vm.boot_sequence) == (None, "hd")

    ok(work(lambda: vm_poweroff(vm_id=vm.pk, user=admin)))
    ok(work(lambda: vm_run(vm_id=vm.pk, user=admin)))
    running = live(conn, vm)
    assert (cdrom_file(running), boot(running)) == ("", ["hd"])
    assert not guest_memory_holds(conn, vm, BOOT_MARKER, timeout=8)


def test_change_cd_on_the_running_vm_shows_in_its_live_xml(admin, work, site, conn, prefix):
    _cluster, _host, _data, images = site
    tools = images["tools"]
    vm = create_vm(site, admin, work, f"{prefix}-cd")
    ok(work(lambda: vm_run(vm_id=vm.pk, user=admin)))
    assert cdrom_file(live(conn, vm)) == ""
    tools_path = conn.get_volume(tools.domain.pool_name, tools.name).path

    ok(work(lambda: cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=tools.pk)))
    assert cdrom_file(live(conn, vm)) == tools_path  # the running guest has it
    assert cdrom_file(live(conn, vm, inactive=True)) == tools_path  # and keeps it
    vm.refresh_from_db()
    assert (vm.status, vm.cd_image_id) == (VMStatus.UP, tools.pk)

    ok(work(lambda: cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=None)))
    assert cdrom_file(live(conn, vm)) == ""
    assert cdrom_file(live(conn, vm, inactive=True)) == ""
    vm.refresh_from_db()
    assert vm.cd_image_id is None
