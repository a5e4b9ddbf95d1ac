"""Render node XML files for libvirt's test driver (open them as `test:///abs/path/node.xml`).

Quirks of libvirt 9.0's test driver: the host name is always the real machine's (the file
cannot set it; `hostname` is kept as a comment), and every pool reports a 100 GiB capacity
whatever the file says (allocation is the sum of its volumes' allocations).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hypervisor.datatypes import STATE_BY_NUMBER, DomainSpec, DomainState, NetworkSpec
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


def render_node_xml(
    *,
    hostname: str,
    cpus: int,
    memory_mb: int,
    pools: list[TestPool],
    domains: list[TestDomain],
    networks: list[NetworkSpec] = (),
) -> str:
    """The XML of a test-driver node with these CPUs, memory, dir pools, domains and (active)
    libvirt networks."""
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
