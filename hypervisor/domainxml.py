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
