"""Host devices in the hypervisor layer, on libvirt's test driver: a node's pci, usb_device and
scsi devices read and parsed (list_host_devices), the <hostdev> elements of a domain built,
defined and started on the test driver, and the generated domain XML checked against
libvirt's own schema (virt-xml-validate, from libvirt-clients)."""

import shutil
import subprocess

import pytest

import hypervisor
from hypervisor import DeviceCapability, DomainSpec, DomainState, HostdevSpec
from hypervisor.domainxml import DiskSource, domain_xml, node_device
from hypervisor.testnode import TEST_HOST_DEVICES, TestDomain, render_node_xml

UUID = "00000000-0000-4000-8000-0000000000d1"
HOSTDEVS = (
    HostdevSpec(DeviceCapability.PCI, (0, 1, 0, 0)),
    HostdevSpec(DeviceCapability.USB_DEVICE, (1, 3), vendor_id="0x0403", product_id="0x6001"),
    HostdevSpec(DeviceCapability.SCSI, (2, 0, 0, 0)),
)


def node(tmp_path, *, devices=TEST_HOST_DEVICES, domains=()) -> str:
    xml = render_node_xml(
        hostname="n", cpus=4, memory_mb=8192, pools=[], domains=list(domains), devices=devices
    )
    path = tmp_path / "node.xml"
    path.write_text(xml)
    return f"test://{path}"


@pytest.fixture
def uri(tmp_path):
    made = node(tmp_path)
    yield made
    hypervisor.disconnect(made)


def test_a_hosts_devices_are_listed_with_their_ids_addresses_and_iommu_groups(uri):
    found = hypervisor.connect(uri).list_host_devices()
    assert [d.name for d in found] == sorted(d.name for d in TEST_HOST_DEVICES)
    by_name = {d.name: d for d in found}
    gpu = by_name["pci_0000_01_00_0"]
    assert (gpu.capability, gpu.address, gpu.address_text) == ("pci", (0, 1, 0, 0), "0000:01:00.0")
    assert (gpu.vendor_id, gpu.vendor_name) == ("0x10de", "NVIDIA Corporation")
    assert (gpu.product_id, gpu.product_name) == ("0x1eb8", "TU104GL [Tesla T4]")
    assert gpu.iommu_group == 12
    usb = by_name["usb_1_3"]
    assert (usb.capability, usb.address, usb.address_text) == ("usb_device", (1, 3), "001:003")
    assert (usb.vendor_id, usb.product_id, usb.iommu_group) == ("0x0403", "0x6001", None)
    scsi = by_name["scsi_2_0_0_0"]
    assert (scsi.capability, scsi.address, scsi.product_name) == ("scsi", (2, 0, 0, 0), "disk")
    assert {d.capability for d in found} == set(DeviceCapability.ALL)


def test_a_host_without_assignable_devices_lists_none(tmp_path):
    made = node(tmp_path, devices=())
    try:
        assert hypervisor.connect(made).list_host_devices() == []
    finally:
        hypervisor.disconnect(made)
    # libvirt's default test node has scsi_host adapters and the computer: none assignable
    assert hypervisor.connect("test:///default").list_host_devices() == []


def test_node_device_xml_is_parsed_with_its_driver_and_others_are_left_out():
    xml = """<device><name>pci_0000_00_1f_3</name><parent>computer</parent>
      <driver><name>snd_hda_intel</name></driver>
      <capability type='pci'><class>0x040300</class><domain>0</domain><bus>0</bus>
        <slot>31</slot><function>3</function>
        <product id='0xa348'>Cannon Lake PCH cAVS</product><vendor id='0x8086'>Intel Corporation</vendor>
        <iommuGroup number='13'><address domain='0x0000' bus='0x00' slot='0x1f' function='0x3'/></iommuGroup>
      </capability></device>"""
    dev = node_device(xml)
    assert (dev.driver, dev.address_text, dev.iommu_group) == ("snd_hda_intel", "0000:00:1f.3", 13)
    host_adapter = "<device><name>scsi_host0</name><capability type='scsi_host'><host>0</host></capability></device>"
    assert node_device(host_adapter) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"capability": "net", "address": (0,)},
        {"capability": "pci", "address": (0, 1, 0)},
        {"capability": "pci", "address": (0, 1, 0, -1)},
        {"capability": "usb_device", "address": (1, 3)},  # no vendor/product
        {"capability": "usb_device", "address": (1, 3), "vendor_id": "0x04'3", "product_id": "0x1"},
    ],
)
def test_a_hostdev_spec_refuses_what_would_not_make_sense_in_xml(bad):
    with pytest.raises(ValueError):
        HostdevSpec(**bad)


def test_a_domain_with_host_devices_is_defined_and_runs_on_the_test_driver(tmp_path):
    spec = DomainSpec(uuid=UUID, name="gpu-vm", memory_mb=256, vcpus=1, hostdevs=HOSTDEVS)
    made = node(tmp_path)
    try:
        conn = hypervisor.connect(made)
        conn.define_domain(spec)
        assert conn.domain_host_devices(UUID) == [
            "pci 0000:01:00.0",
            "usb 0x0403:0x6001",
            "scsi scsi_host2 0:0:0",
        ]
        conn.start(UUID)
        assert conn.get_domain(UUID).state == DomainState.RUNNING
    finally:
        hypervisor.disconnect(made)
    # and one the node file describes with them (a test host's VM with devices)
    loaded = node(tmp_path, domains=[TestDomain(spec, DomainState.SHUTOFF)])
    try:
        assert len(hypervisor.connect(loaded).domain_host_devices(UUID)) == 3
    finally:
        hypervisor.disconnect(loaded)


def test_the_generated_domain_xml_with_hostdevs_passes_virt_xml_validate(tmp_path):
    validator = shutil.which("virt-xml-validate")
    assert validator, "virt-xml-validate missing: install libvirt-clients (make setup does)"
    spec = DomainSpec(uuid=UUID, name="gpu-vm", memory_mb=1024, vcpus=2, hostdevs=HOSTDEVS)
    xml = domain_xml(
        spec,
        domain_type="kvm",
        disks=[DiskSource("/var/lib/x/disk.qcow2", "qcow2", "vda", "virtio")],
    )
    assert xml.count("<hostdev ") == 3
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    result = subprocess.run(
        [validator, str(path), "domain"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr or result.stdout
    assert "validates" in result.stdout + result.stderr
