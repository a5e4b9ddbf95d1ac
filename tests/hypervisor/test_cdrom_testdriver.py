"""The CD-ROM drive and boot order of the domains Vireo defines (hypervisor/domainxml.py), and
Change CD and Run Once's start on the test driver (the live XML of a real guest:
tests/integration/test_cdrom_qemu.py)."""

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from hypervisor_nodes import OFF_UUID, RUNNING_UUID, spec

from hypervisor import CdromSpec, DiskSpec, HypervisorError
from hypervisor.domainxml import DiskSource, cdrom_source, domain_xml, with_cdrom


def drive(xml: str) -> ET.Element:
    (cd,) = [d for d in ET.fromstring(xml).findall("devices/disk") if d.get("device") == "cdrom"]
    return cd


def test_a_domain_has_a_read_only_cdrom_drive_and_its_boot_order():
    base = spec(OFF_UUID, "spare")
    xml = domain_xml(
        replace(base, boot=("cdrom", "hd", "network")),
        domain_type="kvm",
        disks=[DiskSource("/pool/a.qcow2", "qcow2", "vda", "virtio")],
        cdrom_path="/iso/tools.iso",
    )
    cd = drive(xml)
    assert cd.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    assert cd.find("readonly") is not None and cd.find("source").get("file") == "/iso/tools.iso"
    assert [b.get("dev") for b in ET.fromstring(xml).findall("os/boot")] == [
        "cdrom",
        "hd",
        "network",
    ]
    empty = domain_xml(base, domain_type="kvm", disks=[])
    assert drive(empty).find("source") is None and cdrom_source(empty) == ""
    assert cdrom_source(with_cdrom(empty, "/iso/x.iso")) == "/iso/x.iso"
    assert cdrom_source(with_cdrom(xml, None)) == ""
    with pytest.raises(ValueError, match="named twice"):
        domain_xml(replace(base, boot=("hd", "hd")), domain_type="kvm", disks=[])


def test_change_cd_and_its_refusal_when_the_pool_is_not_active(conn):
    conn.create_volume("data", "tools.iso", 2**20, preallocate=True)
    conn.change_cd(RUNNING_UUID, CdromSpec("data", "tools.iso"))
    assert conn.domain_cdrom(RUNNING_UUID, inactive=True).endswith("/data/tools.iso")
    conn.change_cd(RUNNING_UUID, CdromSpec())
    assert conn.domain_cdrom(RUNNING_UUID, inactive=True) == ""
    conn.pool_stop("data")
    with pytest.raises(HypervisorError, match="pool data is not active on this host"):
        conn.change_cd(RUNNING_UUID, CdromSpec("data", "tools.iso"))


def test_start_once_runs_the_one_time_definition_and_keeps_the_saved_one(conn):
    conn.create_volume("data", "boot.iso", 2**20, preallocate=True)
    saved = replace(spec(OFF_UUID, "spare"), disks=(DiskSpec("data", "web.qcow2"),))
    once = replace(saved, cdrom=CdromSpec("data", "boot.iso"), boot=("cdrom", "hd"))
    conn.start_once(once, saved)
    assert conn.get_domain(OFF_UUID).state == "running"
    assert conn.domain_boot_order(OFF_UUID) == ["cdrom", "hd"]
    assert conn.domain_cdrom(OFF_UUID).endswith("/boot.iso")
    assert conn.domain_boot_order(OFF_UUID, inactive=True) == ["hd"]
    assert conn.domain_cdrom(OFF_UUID, inactive=True) == ""
