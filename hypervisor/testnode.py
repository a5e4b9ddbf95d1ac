"""Render node XML files for libvirt's test driver (open them as `test:///abs/path/node.xml`).

Quirks of libvirt 9.0's test driver: the host name is always the real machine's (the file
cannot set it; `hostname` is kept as a comment), and every pool reports a 100 GiB capacity
whatever the file says (allocation is the sum of its volumes' allocations).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hypervisor.datatypes import (
    STATE_BY_NUMBER,
    DeviceCapability,
    DomainSpec,
    DomainState,
    NetworkSpec,
    NodeDevice,
)
from hypervisor.domainxml import DiskSource, domain_element, network_xml

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


@dataclass(frozen=True)
class TestVolume:
    """A volume of a test pool; sizes in bytes."""

    __test__ = False  # not a pytest test class

    name: str
    capacity: int
    allocation: int
    format: str = "qcow2"


@dataclass(frozen=True)
class TestPool:
    """A dir pool of the test node with its volumes (each at `path`/name); uuid from its name."""

    __test__ = False

    name: str
    path: str
    capacity: int
    volumes: tuple[TestVolume, ...] = ()


@dataclass(frozen=True)
class TestDomain:
    """A persistent domain of the test node, in `state` (a DomainState)."""

    __test__ = False

    spec: DomainSpec
    state: str
    has_managed_save: bool = False


def _sub(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    child.text = text
    return child


def _disks(spec: DomainSpec, pools: list[TestPool]) -> list[DiskSource]:
    volumes = {(p.name, v.name): (p, v) for p in pools for v in p.volumes}
    disks = []
    for disk in spec.disks:
        if (disk.pool, disk.volume) not in volumes:
            raise ValueError(f"{spec.name}: no volume {disk.volume!r} in pool {disk.pool!r}")
        pool, volume = volumes[disk.pool, disk.volume]
        path = f"{pool.path.rstrip('/')}/{volume.name}"
        disks.append(DiskSource(path, volume.format, disk.target, disk.bus))
    return disks


def _cdrom_path(spec: DomainSpec, pools: list[TestPool]) -> str | None:
    if spec.cdrom.empty:
        return None
    for pool in pools:
        if pool.name == spec.cdrom.pool and any(v.name == spec.cdrom.volume for v in pool.volumes):
            return f"{pool.path.rstrip('/')}/{spec.cdrom.volume}"
    raise ValueError(f"{spec.name}: no image {spec.cdrom.volume!r} in pool {spec.cdrom.pool!r}")


# The devices every test host has (the demo, the browser suite and the tests give them to
# VMs): an Intel NIC, an NVIDIA GPU with its audio function, a USB serial adapter and a USB
# token, and a SCSI disk. libvirt 9.0's test driver keeps what the file says of them but
# drops <driver>, so they report none.
TEST_HOST_DEVICES: tuple[NodeDevice, ...] = (
    NodeDevice(
        name="pci_0000_00_19_0",
        capability=DeviceCapability.PCI,
        address=(0, 0, 0x19, 0),
        vendor_id="0x8086",
        vendor_name="Intel Corporation",
        product_id="0x1521",
        product_name="I350 Gigabit Network Connection",
        iommu_group=7,
        driver="igb",
    ),
    NodeDevice(
        name="pci_0000_01_00_0",
        capability=DeviceCapability.PCI,
        address=(0, 1, 0, 0),
        vendor_id="0x10de",
        vendor_name="NVIDIA Corporation",
        product_id="0x1eb8",
        product_name="TU104GL [Tesla T4]",
        iommu_group=12,
        driver="nvidia",
    ),
    NodeDevice(
        name="pci_0000_01_00_1",
        capability=DeviceCapability.PCI,
        address=(0, 1, 0, 1),
        vendor_id="0x10de",
        vendor_name="NVIDIA Corporation",
        product_id="0x10f8",
        product_name="TU104 HD Audio Controller",
        iommu_group=12,
        driver="snd_hda_intel",
    ),
    NodeDevice(
        name="usb_1_3",
        capability=DeviceCapability.USB_DEVICE,
        address=(1, 3),
        vendor_id="0x0403",
        vendor_name="Future Technology Devices International, Ltd",
        product_id="0x6001",
        product_name="FT232 Serial (UART) IC",
        driver="ftdi_sio",
    ),
    NodeDevice(
        name="usb_1_4",
        capability=DeviceCapability.USB_DEVICE,
        address=(1, 4),
        vendor_id="0x1050",
        vendor_name="Yubico.com",
        product_id="0x0407",
        product_name="Yubikey 4/5 OTP+U2F+CCID",
        driver="usbhid",
    ),
    NodeDevice(
        name="scsi_2_0_0_0",
        capability=DeviceCapability.SCSI,
        address=(2, 0, 0, 0),
        product_name="disk",
        driver="sd",
    ),
)


def node_device_element(dev: NodeDevice) -> ET.Element:
    """A <device> of a test node, as libvirt describes a node device."""
    el = ET.Element("device")
    _sub(el, "name", dev.name)
    _sub(el, "parent", dev.parent or "computer")
    if dev.driver:
        _sub(ET.SubElement(el, "driver"), "name", dev.driver)
    cap = ET.SubElement(el, "capability", type=dev.capability)
    if dev.capability == DeviceCapability.PCI:
        for tag, value in zip(("domain", "bus", "slot", "function"), dev.address, strict=True):
            _sub(cap, tag, str(value))
    elif dev.capability == DeviceCapability.USB_DEVICE:
        for tag, value in zip(("bus", "device"), dev.address, strict=True):
            _sub(cap, tag, str(value))
    else:
        for tag, value in zip(("host", "bus", "target", "lun"), dev.address, strict=True):
            _sub(cap, tag, str(value))
        _sub(cap, "type", dev.product_name or "disk")
    if dev.capability != DeviceCapability.SCSI:
        _sub(cap, "product", dev.product_name, id=dev.product_id)
        _sub(cap, "vendor", dev.vendor_name, id=dev.vendor_id)
    if dev.iommu_group is not None:
        group = ET.SubElement(cap, "iommuGroup", number=str(dev.iommu_group))
        domain, bus, slot, function = dev.address
        ET.SubElement(
            group,
            "address",
            domain=f"0x{domain:04x}",
            bus=f"0x{bus:02x}",
            slot=f"0x{slot:02x}",
            function=f"0x{function:x}",
        )
    return el


def render_node_xml(
    *,
    hostname: str,
    cpus: int,
    memory_mb: int,
    pools: list[TestPool],
    domains: list[TestDomain],
    networks: list[NetworkSpec] = (),
    devices: tuple[NodeDevice, ...] = (),
) -> str:
    """The XML of a test-driver node with these CPUs, memory, dir pools, domains, (active)
    libvirt networks and node devices."""
    ET.register_namespace("test", TEST_NS)
    node = ET.Element("node")
    node.append(ET.Comment(f" hostname: {hostname} (the test driver reports the real one) "))
    cpu = ET.SubElement(node, "cpu")
    for tag, value in [
        ("mhz", "2000"),
        ("model", "Vireo Test CPU"),
        ("nodes", "1"),
        ("sockets", "1"),
        ("cores", str(cpus)),
        ("threads", "1"),
        ("active", str(cpus)),
    ]:
        _sub(cpu, tag, value)
    _sub(node, "memory", str(memory_mb * 1024))  # KiB
    for domain in domains:
        if domain.has_managed_save and domain.state != DomainState.SHUTOFF:
            raise ValueError(f"{domain.spec.name}: only a shut-off domain has a managed save")
        element = domain_element(
            domain.spec,
            domain_type="test",
            disks=_disks(domain.spec, pools),
            cdrom_path=_cdrom_path(domain.spec, pools),
        )
        runstate = STATE_BY_NUMBER.index(domain.state)
        _sub(element, f"{{{TEST_NS}}}runstate", str(runstate))
        if domain.has_managed_save:
            ET.SubElement(element, f"{{{TEST_NS}}}hasmanagedsave")
        node.append(element)
    for network in networks:
        net_el = ET.fromstring(network_xml(network))
        _sub(net_el, "uuid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"vireo-test-net:{network.name}")))
        node.append(net_el)
    for dev in devices:
        node.append(node_device_element(dev))
    for pool in pools:
        pool_el = ET.SubElement(node, "pool", type="dir")
        _sub(pool_el, "name", pool.name)
        _sub(pool_el, "uuid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"vireo-test-pool:{pool.name}")))
        _sub(pool_el, "capacity", str(pool.capacity), unit="bytes")
        _sub(ET.SubElement(pool_el, "target"), "path", pool.path)
        for volume in pool.volumes:
            vol_el = ET.SubElement(pool_el, "volume")
            _sub(vol_el, "name", volume.name)
            _sub(vol_el, "capacity", str(volume.capacity), unit="bytes")
            _sub(vol_el, "allocation", str(volume.allocation), unit="bytes")
            ET.SubElement(ET.SubElement(vol_el, "target"), "format", type=volume.format)
    ET.indent(node)
    return ET.tostring(node, encoding="unicode") + "\n"
