"""Host devices on a real libvirtd with qemu: the host's node devices read through the
nodedev driver (this machine's own PCI devices), and a domain defined with a <hostdev> of one
of them, which libvirt's qemu driver accepts and keeps. It is never started: starting it would
take the device from this machine (managed='yes' detaches it from its driver)."""

import re
import uuid

import pytest

from hypervisor import DeviceCapability, DomainSpec, HostdevSpec

pytestmark = pytest.mark.integration


def test_the_hosts_devices_are_read_and_one_is_kept_in_a_definition(conn, prefix):
    devices = conn.list_host_devices()
    pci = [d for d in devices if d.capability == DeviceCapability.PCI]
    assert pci, "the host lists no PCI device"
    for dev in pci:
        # libvirt names a PCI device by its address: pci_DDDD_BB_SS_F
        assert dev.name == "pci_" + re.sub(r"[:.]", "_", dev.address_text), dev
        assert re.fullmatch(r"0x[0-9a-f]{4}", dev.vendor_id), dev
    first = pci[0]
    spec = DomainSpec(
        uuid=str(uuid.uuid4()),
        name=f"{prefix}-hostdev",
        memory_mb=64,
        vcpus=1,
        hostdevs=(HostdevSpec(DeviceCapability.PCI, first.address),),
    )
    conn.define_domain(spec)
    assert conn.domain_host_devices(spec.uuid, inactive=True) == [f"pci {first.address_text}"]
