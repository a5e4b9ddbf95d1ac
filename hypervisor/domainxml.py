"""The one builder of domain XML, shared by define_domain and the test-node renderer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hypervisor.datatypes import DomainSpec


@dataclass(frozen=True)
class DiskSource:
    """A DiskSpec resolved to its volume's file path and format."""

    path: str
    format: str
    target: str
    bus: str


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def domain_element(
    spec: DomainSpec, *, domain_type: str, disks: list[DiskSource], arch: str | None = None
) -> ET.Element:
    """Build the <domain> element for `spec`: hvm, file disks, a serial pty console, no graphics."""
    dom = ET.Element("domain", {"type": domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    if spec.description:
        _sub(dom, "description", spec.description)
    _sub(dom, "memory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", **({"arch": arch} if arch else {}))
    _sub(os_el, "boot", dev="hd")
    _sub(_sub(dom, "features"), "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    devices = _sub(dom, "devices")
    for disk in disks:
        disk_el = _sub(devices, "disk", type="file", device="disk")
        _sub(disk_el, "driver", name="qemu", type="qcow2" if disk.format == "qcow2" else "raw")
        _sub(disk_el, "source", file=disk.path)
        _sub(disk_el, "target", dev=disk.target, bus=disk.bus)
    _sub(_sub(devices, "serial", type="pty"), "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    return dom


def domain_xml(
    spec: DomainSpec, *, domain_type: str, disks: list[DiskSource], arch: str | None = None
) -> str:
    """The domain XML text for `spec` (see domain_element)."""
    element = domain_element(spec, domain_type=domain_type, disks=disks, arch=arch)
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


# -- reading and rewriting the disks of an existing domain's XML ---------------------------------


def _disk_elements(root: ET.Element) -> dict[str, ET.Element]:
    """The <disk> elements of a domain by target dev."""
    disks = {}
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            disks[target.get("dev")] = disk
    return disks


def disk_targets(xml: str) -> list[str]:
    """Every disk target (vda, hdc ...) of the domain, cdroms included, in XML order."""
    return list(_disk_elements(ET.fromstring(xml)))


def disk_files(xml: str) -> dict[str, str]:
    """Target -> source file of the domain's file-backed disks (device='disk')."""
    files = {}
    for target, disk in _disk_elements(ET.fromstring(xml)).items():
        source = disk.find("source")
        if disk.get("device", "disk") == "disk" and source is not None and source.get("file"):
            files[target] = source.get("file")
    return files


def disk_chain(xml: str, target: str) -> list[str]:
    """The files of disk `target` from its source down its <backingStore> chain (live XML)."""
    disk = _disk_elements(ET.fromstring(xml)).get(target)
    files: list[str] = []
    node = disk
    while node is not None:
        source = node.find("source")
        if source is None or not source.get("file"):
            break
        files.append(source.get("file"))
        node = node.find("backingStore")
    return files


def with_disk_files(xml: str, files: dict[str, tuple[str, str]]) -> str:
    """`xml` with disks `target` -> (file, format) swapped in and their <backingStore> removed.

    Without <backingStore> libvirt reads the chain from the qcow2 headers at the next start,
    so a definition never names a layer that a merge took away. KeyError for an unknown target.
    """
    root = ET.fromstring(xml)
    disks = _disk_elements(root)
    for target, (path, fmt) in files.items():
        disk = disks[target]
        disk.set("type", "file")
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
        source = disk.find("source")
        if source is None:
            source = ET.SubElement(disk, "source")
        source.attrib.pop("index", None)
        source.set("file", path)
        driver = disk.find("driver")
        if driver is None:
            driver = ET.SubElement(disk, "driver", name="qemu")
        driver.set("type", "qcow2" if fmt == "qcow2" else "raw")
    return ET.tostring(root, encoding="unicode")


def without_backing_stores(xml: str) -> str:
    """`xml` with every disk's <backingStore> removed (see with_disk_files)."""
    root = ET.fromstring(xml)
    for disk in _disk_elements(root).values():
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    return ET.tostring(root, encoding="unicode")
