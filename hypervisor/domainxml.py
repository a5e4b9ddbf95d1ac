"""The one place libvirt XML is built and read: domains, volumes, pools, snapshots, capabilities.

The domain builder is shared by define_domain and the test-node renderer.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hypervisor.consolexml import graphics_elements
from hypervisor.datatypes import (
    DeviceCapability,
    DomainSpec,
    HostdevSpec,
    InterfaceSpec,
    NetworkMode,
    NetworkSpec,
    NodeDevice,
    PoolSpec,
)


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


BOOT_DEVICES = ("hd", "cdrom", "network")
# The CD-ROM drive every domain Vireo defines has. No machine type is named, so QEMU's default
# for x86_64 (`pc`, i440fx) is used, whose IDE bus takes a CD-ROM; a q35 machine would need
# sata (and target sdc).
CDROM_TARGET, CDROM_BUS = "hdc", "ide"


def cdrom_element(path: str | None) -> ET.Element:
    """The CD-ROM drive (read-only), with the image at `path` in it, or empty (None)."""
    disk = ET.Element("disk", {"type": "file", "device": "cdrom"})
    _sub(disk, "driver", name="qemu", type="raw")
    if path:
        _sub(disk, "source", file=path)
    _sub(disk, "target", dev=CDROM_TARGET, bus=CDROM_BUS)
    _sub(disk, "readonly")
    return disk


def cdrom_xml(path: str | None) -> str:
    """The CD-ROM drive's device XML (for a live change of its CD: updateDeviceFlags)."""
    return ET.tostring(cdrom_element(path), encoding="unicode")


def cdrom_source(xml: str) -> str | None:
    """The file in the domain's CD-ROM drive: "" when the drive is empty, None without one."""
    for disk in ET.fromstring(xml).findall("devices/disk"):
        if disk.get("device") == "cdrom":
            source = disk.find("source")
            return (source.get("file") or "") if source is not None else ""
    return None


def with_cdrom(xml: str, path: str | None) -> str:
    """`xml` with its CD-ROM drive holding `path` (None: emptied); one is added if it has none."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    new = cdrom_element(path)
    children = list(devices)
    for index, child in enumerate(children):
        if child.tag == "disk" and child.get("device") == "cdrom":
            devices.remove(child)
            devices.insert(index, new)
            break
    else:
        after = [i for i, c in enumerate(children) if c.tag == "disk"]
        devices.insert(after[-1] + 1 if after else 0, new)
    return ET.tostring(root, encoding="unicode")


def boot_order(xml: str) -> list[str]:
    """The devices the domain boots from, in order (<os><boot dev=...>)."""
    return [b.get("dev") for b in ET.fromstring(xml).findall("os/boot")]


def domain_element(
    spec: DomainSpec,
    *,
    domain_type: str,
    disks: list[DiskSource],
    arch: str | None = None,
    cdrom_path: str | None = None,
    spice: bool = False,
    qxl: bool = False,
) -> ET.Element:
    """Build the <domain> element for `spec`: hvm, file disks, a CD-ROM drive (with the image
    at `cdrom_path`, or empty), the boot order, a serial pty console, the qemu-guest-agent
    channel, a pvpanic device (x86: a guest panic stops it as crashed), and its graphics: VNC (and SPICE when `spice`) on `spec.graphics_listen` with a
    video device (consolexml.graphics_elements)."""
    dom = ET.Element("domain", {"type": domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    if spec.description:
        _sub(dom, "description", spec.description)
    _sub(dom, "memory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    cores = spec.cores_per_socket if spec.cores_per_socket > 0 else 1
    if spec.vcpus % cores == 0 or spec.cpu_passthrough:
        cpu = _sub(dom, "cpu", **({"mode": "host-passthrough"} if spec.cpu_passthrough else {}))
        if spec.vcpus % cores == 0:
            _sub(cpu, "topology", sockets=str(spec.vcpus // cores), cores=str(cores), threads="1")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", **({"arch": arch} if arch else {}))
    boot = [dev for dev in spec.boot if dev in BOOT_DEVICES] or ["hd"]
    if len(set(boot)) != len(boot):
        raise ValueError(f"a boot device is named twice: {spec.boot!r}")
    for dev in boot:
        _sub(os_el, "boot", dev=dev)
    _sub(_sub(dom, "features"), "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")  # a guest panic stops it, reported as crashed
    devices = _sub(dom, "devices")
    for disk in disks:
        disk_el = _sub(devices, "disk", type="file", device="disk")
        _sub(disk_el, "driver", name="qemu", type="qcow2" if disk.format == "qcow2" else "raw")
        _sub(disk_el, "source", file=disk.path)
        _sub(disk_el, "target", dev=disk.target, bus=disk.bus)
    devices.append(cdrom_element(cdrom_path))
    for nic in spec.interfaces:
        devices.append(interface_element(nic))
    for hostdev in spec.hostdevs:
        devices.append(hostdev_element(hostdev))
    _sub(_sub(devices, "serial", type="pty"), "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    devices.append(guest_agent_channel_element())
    devices.extend(graphics_elements(spec.graphics_listen, spice=spice, qxl=qxl))
    if arch in (None, "x86_64", "i686"):
        # pvpanic: a guest kernel that panics tells QEMU, and libvirt reports the domain
        # crashed (the HA watcher restarts a Highly Available VM that crashed).
        _sub(devices, "panic", model="isa")
    return dom


GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def guest_agent_channel_element() -> ET.Element:
    """The virtio-serial channel qemu-guest-agent talks on (libvirt adds the controller and
    picks the host side's socket path)."""
    channel = ET.Element("channel", {"type": "unix"})
    _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    return channel


def has_guest_agent_channel(xml: str) -> bool:
    """Whether a domain's XML has the qemu-guest-agent channel."""
    return any(
        target.get("name") == GUEST_AGENT_CHANNEL
        for target in ET.fromstring(xml).findall("devices/channel/target")
    )


def domain_xml(
    spec: DomainSpec,
    *,
    domain_type: str,
    disks: list[DiskSource],
    arch: str | None = None,
    cdrom_path: str | None = None,
    spice: bool = False,
    qxl: bool = False,
) -> str:
    """The domain XML text for `spec` (see domain_element)."""
    element = domain_element(
        spec,
        domain_type=domain_type,
        disks=disks,
        arch=arch,
        cdrom_path=cdrom_path,
        spice=spice,
        qxl=qxl,
    )
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


# -- host devices ----------------------------------------------------------------------------


def hostdev_element(dev: HostdevSpec) -> ET.Element:
    """A host device given to the guest: <hostdev mode='subsystem'>, PCI by address (managed:
    libvirt detaches it from its host driver at start and gives it back at stop), USB by
    vendor and product, SCSI by its adapter (scsi_host<N>) and bus/target/unit."""
    if dev.capability == DeviceCapability.PCI:
        el = ET.Element("hostdev", {"mode": "subsystem", "type": "pci", "managed": "yes"})
        domain, bus, slot, function = dev.address
        _sub(
            _sub(el, "source"),
            "address",
            domain=f"0x{domain:04x}",
            bus=f"0x{bus:02x}",
            slot=f"0x{slot:02x}",
            function=f"0x{function:x}",
        )
    elif dev.capability == DeviceCapability.USB_DEVICE:
        el = ET.Element("hostdev", {"mode": "subsystem", "type": "usb", "managed": "yes"})
        source = _sub(el, "source")
        _sub(source, "vendor", id=dev.vendor_id)
        _sub(source, "product", id=dev.product_id)
    else:
        el = ET.Element("hostdev", {"mode": "subsystem", "type": "scsi"})
        host, bus, target, lun = dev.address
        source = _sub(el, "source")
        _sub(source, "adapter", name=f"scsi_host{host}")
        _sub(source, "address", bus=str(bus), target=str(target), unit=str(lun))
    return el


def domain_hostdevs(xml: str) -> list[str]:
    """The host devices of a domain's XML as "pci 0000:00:19.0", "usb 0x0403:0x6001",
    "scsi scsi_host0 0:0:0" (for tests and Events)."""
    out = []
    for el in ET.fromstring(xml).findall("devices/hostdev"):
        source = el.find("source")
        kind = el.get("type")
        if kind == "pci":
            a = source.find("address")
            parts = [int(a.get(k), 16) for k in ("domain", "bus", "slot", "function")]
            out.append("pci {:04x}:{:02x}:{:02x}.{:x}".format(*parts))
        elif kind == "usb":
            out.append(f"usb {source.find('vendor').get('id')}:{source.find('product').get('id')}")
        elif kind == "scsi":
            a = source.find("address")
            adapter = source.find("adapter").get("name")
            out.append(f"scsi {adapter} {a.get('bus')}:{a.get('target')}:{a.get('unit')}")
    return out


def _int(text: str | None) -> int:
    """A number libvirt writes in decimal or 0x-hex; 0 when missing or not a number."""
    try:
        return int((text or "0").strip(), 0)
    except ValueError:
        return 0


def node_device(xml: str) -> NodeDevice | None:
    """A node device's XML as a NodeDevice, or None when it is not a pci, usb_device or scsi
    device (a scsi_host, a net interface, the computer itself ...)."""
    root = ET.fromstring(xml)
    cap = root.find("capability")
    kind = cap.get("type") if cap is not None else None
    if kind not in DeviceCapability.ALL:
        return None

    def num(tag: str) -> int:
        return _int(cap.findtext(tag))

    if kind == DeviceCapability.PCI:
        address = (num("domain"), num("bus"), num("slot"), num("function"))
    elif kind == DeviceCapability.USB_DEVICE:
        address = (num("bus"), num("device"))
    else:
        address = (num("host"), num("bus"), num("target"), num("lun"))
    vendor, product = cap.find("vendor"), cap.find("product")
    group = cap.find("iommuGroup")
    return NodeDevice(
        name=(root.findtext("name") or "").strip(),
        capability=kind,
        address=address,
        vendor_id=vendor.get("id", "") if vendor is not None else "",
        vendor_name=(vendor.text or "").strip() if vendor is not None else "",
        product_id=product.get("id", "") if product is not None else "",
        product_name=(product.text or "").strip()
        if product is not None
        else (cap.findtext("type") or "").strip(),  # a SCSI device says what it is (disk ...)
        iommu_group=_int(group.get("number")) if group is not None else None,
        driver=(root.findtext("driver/name") or "").strip(),
        parent=(root.findtext("parent") or "").strip(),
    )


# -- network interfaces and networks ---------------------------------------------------------


def interface_element(nic: InterfaceSpec) -> ET.Element:
    """<interface type='network'> on the libvirt network `nic.network`, with its MAC, model
    and link state."""
    element = ET.Element("interface", {"type": "network"})
    _sub(element, "mac", address=nic.mac)
    _sub(element, "source", network=nic.network)
    _sub(element, "model", type=nic.model)
    _sub(element, "link", state="up" if nic.link_up else "down")
    return element


def interface_xml(nic: InterfaceSpec) -> str:
    """The <interface> device XML of `nic` (for hot-plug, unplug and update)."""
    return ET.tostring(interface_element(nic), encoding="unicode")


def _interfaces_by_mac(root: ET.Element) -> dict[str, ET.Element]:
    found = {}
    for nic in root.findall("devices/interface"):
        mac = nic.find("mac")
        if mac is not None and mac.get("address"):
            found[mac.get("address").lower()] = nic
    return found


def interface_macs(xml: str) -> list[str]:
    """The MACs of a domain's interfaces, in XML order (lower case)."""
    return list(_interfaces_by_mac(ET.fromstring(xml)))


def interface_link_states(xml: str) -> dict[str, bool]:
    """MAC -> whether the interface's link is up (no <link> element: up)."""
    states = {}
    for mac, nic in _interfaces_by_mac(ET.fromstring(xml)).items():
        link = nic.find("link")
        states[mac] = link is None or link.get("state", "up") == "up"
    return states


def interface_networks(xml: str) -> list[str]:
    """The libvirt network of each interface of a domain, in XML order; "" for an interface
    that is not on a libvirt network (a bridge, a direct device ...)."""
    networks = []
    for nic in ET.fromstring(xml).findall("devices/interface"):
        source = nic.find("source")
        on_network = nic.get("type") == "network" and source is not None
        networks.append(source.get("network", "") if on_network else "")
    return networks


def network_has_ip(xml: str) -> bool:
    """Whether a libvirt network's XML gives the host an address on it (<ip>)."""
    return ET.fromstring(xml).find("ip") is not None


def with_interface(xml: str, nic: InterfaceSpec) -> str:
    """`xml` with the interface of `nic.mac` replaced by `nic` (or `nic` added after the
    last interface or disk)."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    existing = _interfaces_by_mac(root).get(nic.mac.lower())
    new = interface_element(nic)
    children = list(devices)
    if existing is not None:
        index = children.index(existing)
        devices.remove(existing)
    else:
        after = [i for i, c in enumerate(children) if c.tag in ("disk", "interface")]
        index = after[-1] + 1 if after else len(children)
    devices.insert(index, new)
    return ET.tostring(root, encoding="unicode")


def without_interface(xml: str, mac: str) -> str:
    """`xml` without the interface whose MAC is `mac` (KeyError if it has none)."""
    root = ET.fromstring(xml)
    nic = _interfaces_by_mac(root)[mac.lower()]
    root.find("devices").remove(nic)
    return ET.tostring(root, encoding="unicode")


def network_xml(spec: NetworkSpec, *, uuid: str | None = None) -> str:
    """The XML of a libvirt network: NAT or isolated (a bridge libvirt makes, with the host's
    address and DHCP for the rest of the subnet when `ipv4` is given), or an existing host
    bridge (an Open vSwitch one for a VLAN tag: libvirt tags on no other). `uuid`: the one
    the host gave it (a definition replacing another of the same name must keep it)."""
    net = ET.Element("network")
    _sub(net, "name", spec.name)
    if uuid:
        _sub(net, "uuid", uuid)
    if spec.mode == NetworkMode.BRIDGE:
        _sub(net, "forward", mode="bridge")
        _sub(net, "bridge", name=spec.bridge)
        if spec.vlan is not None:
            _sub(net, "virtualport", type="openvswitch")
    elif spec.mode == NetworkMode.NAT:
        _sub(net, "forward", mode="nat")
    elif spec.mode != NetworkMode.ISOLATED:
        raise ValueError(f"unknown network mode {spec.mode!r}")
    if spec.vlan is not None:
        _sub(_sub(net, "vlan"), "tag", id=str(spec.vlan))
    if spec.ipv4 and spec.mode != NetworkMode.BRIDGE:
        interface = ipaddress.IPv4Interface(spec.ipv4)
        ip = _sub(net, "ip", address=str(interface.ip), prefix=str(interface.network.prefixlen))
        # DHCP hands out the subnet's addresses above the host's (below it, if none above).
        first, last = interface.network[1], interface.network[-2]
        if interface.ip < last:
            first = max(first, interface.ip + 1)
        else:
            last = interface.ip - 1
        if first <= last:
            _sub(_sub(ip, "dhcp"), "range", start=str(first), end=str(last))
    return ET.tostring(net, encoding="unicode")


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


def domain_disks(xml: str) -> list[tuple[str, str, str]]:
    """(target, device, source) of each disk of a domain defined by anyone: source is the
    file, block device, volume (pool/volume) or network name the disk reads, or ""."""
    disks = []
    for target, disk in _disk_elements(ET.fromstring(xml)).items():
        source = disk.find("source")
        where = ""
        if source is not None:
            if source.get("pool") and source.get("volume"):
                where = f"{source.get('pool')}/{source.get('volume')}"
            else:
                where = source.get("file") or source.get("dev") or source.get("name") or ""
        disks.append((target, disk.get("device", "disk"), where))
    return disks


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


# -- volumes and pools -----------------------------------------------------------------------


def volume_xml(name: str, capacity: int, allocation: int, fmt: str) -> str:
    """The XML of a new volume of `fmt` (raw, qcow2); sizes in bytes."""
    return ET.tostring(_volume_element(name, capacity, allocation, fmt), encoding="unicode")


def overlay_xml(name: str, capacity: int, backing: tuple[str, str] | None = None) -> str:
    """The XML of a new qcow2 (compat 1.1) overlay; `backing` = (file, format) below it."""
    vol = _volume_element(name, capacity, 0, "qcow2")
    _sub(vol.find("target"), "compat", "1.1")
    if backing is not None:
        store = _sub(vol, "backingStore")
        _sub(store, "path", backing[0])
        _sub(store, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def _volume_element(name: str, capacity: int, allocation: int, fmt: str) -> ET.Element:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity), unit="bytes")
    _sub(vol, "allocation", str(allocation), unit="bytes")
    _sub(_sub(vol, "target"), "format", type=fmt)
    return vol


def _text(xml: str, path: str, attr: str | None = None, default: str = "") -> str:
    node = ET.fromstring(xml).find(path)
    if node is None:
        return default
    value = node.get(attr) if attr else node.text
    return value if value is not None else default


def volume_format(xml: str) -> str:
    """The format (raw, qcow2 ...) of a volume's XML, "" if it names none."""
    return _text(xml, "target/format", "type")


def volume_backing_path(xml: str) -> str:
    """The backing file a volume's XML names ("" for none), as written (maybe relative)."""
    return _text(xml, "backingStore/path")


# libvirt's namespace for a netfs pool's mount options (libvirt >= 5.1).
POOL_FS_NS = "http://libvirt.org/schemas/storagepool/fs/1.0"
ET.register_namespace("fs", POOL_FS_NS)
# One mount option: a word, or word=value, of letters, digits and a few safe signs.
MOUNT_OPTION = re.compile(r"[a-z][a-z0-9_]{0,31}(=[A-Za-z0-9_.:-]{1,64})?")


def pool_xml(spec: PoolSpec) -> str:
    """The XML of a `dir` pool, or of a `netfs` pool mounting an NFS export. The values are
    element text and attributes, so whatever they hold cannot change the document's shape."""
    if spec.type not in ("dir", "netfs"):
        raise ValueError(f"unsupported pool type {spec.type!r}")
    pool = ET.Element("pool", {"type": spec.type})
    _sub(pool, "name", spec.name)
    if spec.type == "netfs":
        source = _sub(pool, "source")
        _sub(source, "host", name=spec.source_host)
        _sub(source, "dir", path=spec.source_dir)
        _sub(source, "format", type="nfs")
    _sub(_sub(pool, "target"), "path", spec.path)
    if spec.type == "netfs" and spec.mount_options:
        opts = _sub(pool, f"{{{POOL_FS_NS}}}mount_opts")
        for option in spec.mount_options:
            if not MOUNT_OPTION.fullmatch(option):
                raise ValueError(f"unsupported mount option {option!r}")
            _sub(opts, f"{{{POOL_FS_NS}}}option", name=option)
    return ET.tostring(pool, encoding="unicode")


def pool_type(xml: str) -> str:
    """The type (dir, logical ...) of a pool's XML."""
    return _text(xml, ".", "type")


def pool_path(xml: str) -> str:
    """The target path of a pool's XML."""
    return _text(xml, "target/path")


# -- host capabilities -----------------------------------------------------------------------


def host_cpu_model(caps: str, default: str) -> str:
    """The host CPU model the capabilities XML names, else `default`."""
    return _text(caps, "host/cpu/model", default=default)


def host_domain_types(caps: str) -> tuple[str, set[str]]:
    """The host's arch (x86_64 if unsaid) and the domain types (kvm, qemu) offered for hvm
    guests of that arch."""
    root = ET.fromstring(caps)
    arch = root.findtext("host/cpu/arch") or "x86_64"
    offered = {
        d.get("type")
        for guest in root.findall("guest")
        if guest.findtext("os_type") == "hvm" and guest.find("arch").get("name") == arch
        for d in guest.findall("arch/domain")
    }
    return arch, offered


# -- external snapshots ----------------------------------------------------------------------


def external_snapshot_xml(
    targets: list[str], overlays: dict[str, str], memory_file: str | None = None
) -> str:
    """The <domainsnapshot> of an external snapshot: each of `targets` (every disk of the
    domain: one left out would get libvirt's default) gets a qcow2 overlay at the file
    `overlays` names for it, or no snapshot; memory goes to `memory_file` if given."""
    snapshot = ET.Element("domainsnapshot")
    if memory_file is not None:
        _sub(snapshot, "memory", snapshot="external", file=memory_file)
    disks = _sub(snapshot, "disks")
    for target in targets:
        if target not in overlays:
            _sub(disks, "disk", name=target, snapshot="no")
            continue
        disk = _sub(disks, "disk", name=target, snapshot="external")
        _sub(disk, "driver", type="qcow2")
        _sub(disk, "source", file=overlays[target])
    return ET.tostring(snapshot, encoding="unicode")


UNKNOWN_LINK_SPEED = 2**32 - 1  # what the kernel's -1 ("unknown") becomes in libvirt's XML


def net_link_speed(xml: str) -> int:
    """The link speed (Mbps) of a network node device whose link is up; 0 when it is down or
    its speed is not known."""
    link = ET.fromstring(xml).find("capability[@type='net']/link")
    if link is None or link.get("state") != "up":
        return 0
    try:
        speed = int(link.get("speed", "0"))
    except ValueError:
        return 0
    return speed if 0 < speed < UNKNOWN_LINK_SPEED else 0
