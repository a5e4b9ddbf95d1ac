"""Host devices: the node devices of a host that can be given to a guest (pci, usb_device,
scsi), read with virConnectListAllNodeDevices (part of Connection)."""

from __future__ import annotations

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.datatypes import NodeDevice
from hypervisor.domainxml import domain_hostdevs, node_device

# The capabilities asked for, as libvirt's list filter.
_ASSIGNABLE = (
    libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
    | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_USB_DEV
    | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_SCSI
)


class DevicesMixin(ConnectionBase):
    """The host's assignable devices."""

    def list_host_devices(self) -> list[NodeDevice]:
        """Every pci, usb_device and scsi node device of the host, by name (a device that
        goes while it is read is left out)."""
        with self._translated():
            found = self._conn.listAllDevices(_ASSIGNABLE)
        devices = []
        for dev in found:
            with self._translated():
                try:
                    xml = dev.XMLDesc(0)
                except libvirt.libvirtError as err:
                    if err.get_error_code() == libvirt.VIR_ERR_NO_NODE_DEVICE:
                        continue  # unplugged while listing: not there any more
                    raise
            parsed = node_device(xml)
            if parsed is not None:
                devices.append(parsed)
        return sorted(devices, key=lambda d: d.name)

    def domain_host_devices(self, uuid: str, *, inactive: bool = False) -> list[str]:
        """The host devices of a domain's definition (the running guest's, or with `inactive`
        the one it starts from next), as "pci 0000:01:00.0", "usb 0x0403:0x6001",
        "scsi scsi_host2 0:0:0"."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        dom = self._domain(uuid)
        with self._translated():
            return domain_hostdevs(dom.XMLDesc(flags))
