"""Logical networks and network interfaces through Vireo on a real libvirtd with qemu: a NAT
and an isolated network defined and started on the host, a VM with a NIC on one, and NIC
hot-plug, link state and unplug on the running qemu guest.

Other runs share the private libvirtd, so this test's networks get ids of their own (the
libvirt name is vireo-<id>) and every network and domain it made is removed afterwards.
"""

import random
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.db import connection
from test_vm_lifecycle_qemu import create_vm, last_job, site, status  # noqa: F401  (fixture)

import hypervisor
from portal.kernel.models import JobStatus
from vms import networks
from vms.choices import NetworkKind, NetworkStatus, VMStatus
from vms.models import Network, NetworkInterface
from vms.services import vm_poweroff, vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_network_ids(conn):
    """Network ids (and so libvirt names) no other run on this libvirtd uses; the libvirt
    networks this test made are removed afterwards, pass or fail."""
    start = random.randrange(10**6, 10**9)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setval(pg_get_serial_sequence('vms_network', 'id'), %s)", [start])
    yield
    for net in conn.list_networks():
        if net.name.startswith("vireo-") and net.name[6:].isdigit() and int(net.name[6:]) > start:
            conn.remove_network(net.name)


def live_interfaces(conn, vm, *, inactive: bool = False) -> dict[str, ET.Element]:
    flags = 2 if inactive else 0  # VIR_DOMAIN_XML_INACTIVE: the persistent definition
    xml = conn._conn.lookupByUUIDString(str(vm.uuid)).XMLDesc(flags)
    return {
        n.find("mac").get("address"): n for n in ET.fromstring(xml).findall("devices/interface")
    }


def test_nat_network_defined_started_and_removed(site, admin, work, conn, own_network_ids):  # noqa: F811
    cluster, _host, _domain = site
    subnet = f"10.{random.randrange(64, 250)}.{random.randrange(0, 250)}.1/24"
    network = work(
        lambda: networks.network_create(
            user=admin,
            data_center_id=cluster.data_center_id,
            name=f"nat-{uuid.uuid4().hex[:6]}",
            kind=NetworkKind.NAT,
            ipv4=subnet,
        )
    )
    network.refresh_from_db()
    assert network.status == NetworkStatus.OPERATIONAL, "the network job failed"
    info = conn.get_network(network.libvirt_name)
    assert info.active and info.autostart and info.persistent
    work(lambda: networks.network_remove(network_id=network.pk, user=admin))
    assert not Network.objects.filter(pk=network.pk).exists()
    with pytest.raises(hypervisor.NetworkNotFound):
        conn.get_network(network.libvirt_name)


def test_vm_with_a_nic_and_hot_plug_on_a_running_guest(
    site,  # noqa: F811
    admin,
    work,
    work_off,
    conn,
    prefix,
    own_network_ids,
):
    cluster, _host, _domain = site
    network = work(
        lambda: networks.network_create(
            user=admin,
            data_center_id=cluster.data_center_id,
            name=f"iso-{uuid.uuid4().hex[:6]}",
            kind=NetworkKind.ISOLATED,
        )
    )
    assert conn.get_network(network.libvirt_name).active
    profile = network.profiles.get()
    vm = create_vm(f"{prefix}-net", site, admin, work_off, conn)

    # A NIC on the Down VM: in its definition.
    nic1 = work(lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile.pk))
    nic1.refresh_from_db()
    assert status(vm) == VMStatus.DOWN, last_job(vm).error
    device = live_interfaces(conn, vm, inactive=True)[nic1.mac]
    assert device.find("source").get("network") == network.libvirt_name

    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP, last_job(vm).error
    assert nic1.mac in live_interfaces(conn, vm)

    # Hot-plug a second one (e1000) into the running guest.
    nic2 = work(
        lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile.pk, model="e1000")
    )
    nic2.refresh_from_db()
    assert last_job(vm).status == JobStatus.SUCCEEDED, last_job(vm).error
    assert not nic2.locked and status(vm) == VMStatus.UP
    live = live_interfaces(conn, vm)
    assert live[nic2.mac].find("model").get("type") == "e1000"
    assert nic2.mac in live_interfaces(conn, vm, inactive=True)

    # Link state down, live.
    edit = {
        "profile_id": profile.pk,
        "name": nic2.name,
        "model": "e1000",
        "mac": nic2.mac,
        "plugged": True,
    }
    work(lambda: networks.nic_edit(vm_id=vm.pk, nic_id=nic2.pk, user=admin, linked=False, **edit))
    assert last_job(vm).status == JobStatus.SUCCEEDED, last_job(vm).error
    assert live_interfaces(conn, vm)[nic2.mac].find("link").get("state") == "down"

    # Unplug it: gone from the definition at once. (A guest without an OS never acknowledges
    # a PCI unplug, so qemu may keep the device in the running guest until it stops.)
    work(lambda: networks.nic_remove(vm_id=vm.pk, nic_id=nic2.pk, user=admin))
    assert last_job(vm).status == JobStatus.SUCCEEDED, last_job(vm).error
    assert not NetworkInterface.objects.filter(pk=nic2.pk).exists()
    assert nic2.mac not in live_interfaces(conn, vm, inactive=True)

    # A network in use cannot go.
    with pytest.raises(networks.ActionRefused, match="use it"):
        networks.network_remove(network_id=network.pk, user=admin)

    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.DOWN
