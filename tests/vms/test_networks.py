"""Logical networks, vNIC profiles and VM network interfaces end to end: service -> on-commit
enqueue -> real RQ worker -> libvirt's test driver, every refusal changing nothing, and the
races (two admins, one name; two interfaces, one MAC)."""

import threading
import xml.etree.ElementTree as ET

import pytest
from django.db import connection
from factories import (
    DataCenterFactory,
    HostFactory,
    NetworkFactory,
    NicFactory,
    StorageDomainFactory,
    UserFactory,
    grant,
    profile_of,
)
from helpers import GiB

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from vms import networks, services
from vms.choices import HostStatus, NetworkKind, NetworkStatus, VMStatus
from vms.models import Host, Network, NetworkInterface, VirtualMachine, VnicProfile
from vms.vnics import mac_pool_range

pytestmark = pytest.mark.django_db


def conn_of(host) -> hypervisor.Connection:
    return hypervisor.connect(host.uri)


def libvirt_networks(host) -> dict[str, hypervisor.NetworkInfo]:
    return {n.name: n for n in conn_of(host).list_networks()}


def network_xml(host, name: str) -> ET.Element:
    return ET.fromstring(conn_of(host)._conn.networkLookupByName(name).XMLDesc(0))


def domain_nics(vm) -> dict[str, ET.Element]:
    """MAC -> <interface> of the VM's domain definition, as libvirt holds it."""
    dom = conn_of(vm.host)._conn.lookupByUUIDString(str(vm.uuid))
    root = ET.fromstring(dom.XMLDesc(2))  # VIR_DOMAIN_XML_INACTIVE: the persistent definition
    return {n.find("mac").get("address"): n for n in root.findall("devices/interface")}


def state():
    """What a refusal must leave as it was."""
    return (
        list(Network.objects.order_by("pk").values_list("pk", "name", "status", "vlan", "kind")),
        list(VnicProfile.objects.order_by("pk").values_list("pk", "name")),
        list(
            NetworkInterface.objects.order_by("pk").values_list(
                "pk", "name", "mac", "profile_id", "linked", "plugged", "locked"
            )
        ),
        list(VirtualMachine.objects.order_by("pk").values_list("pk", "status")),
        Job.objects.count(),
    )


def refused(call, *words):
    before = state()
    with pytest.raises(ActionRefused) as caught:
        call()
    for word in words:
        assert word in str(caught.value), str(caught.value)
    assert state() == before
    return str(caught.value)


@pytest.fixture
def dc_hosts(sync_hosts):
    """A data center with two Up test hosts in one cluster."""
    first = HostFactory()
    second = HostFactory(cluster=first.cluster)
    sync_hosts(first, second)
    return first.cluster.data_center, first, second


def create(admin, dc, **fields):
    values = {"name": "blue", "kind": NetworkKind.ISOLATED, **fields}
    return networks.network_create(user=admin, data_center_id=dc.pk, **values)


# -- logical networks ------------------------------------------------------------------------


def test_new_network_is_started_on_every_up_host_with_its_default_profile(
    admin, dc_hosts, work, sync_hosts
):
    dc, first, second = dc_hosts
    elsewhere = HostFactory()
    sync_hosts(elsewhere)
    network = work(lambda: create(admin, dc, kind=NetworkKind.NAT, ipv4="10.77.0.1/24"))
    network.refresh_from_db()
    assert network.status == NetworkStatus.OPERATIONAL
    assert list(network.profiles.values_list("name", flat=True)) == ["blue"]
    for host in (first, second):
        info = libvirt_networks(host)[network.libvirt_name]
        assert info.active and info.autostart
        xml = network_xml(host, network.libvirt_name)
        assert xml.find("forward").get("mode") == "nat"
        assert xml.find("ip").get("address") == "10.77.0.1"
        assert xml.find("ip/dhcp/range").get("start") == "10.77.0.2"
    assert network.libvirt_name not in libvirt_networks(elsewhere)
    job = Job.objects.get(params__network_id=network.pk)
    assert job.status == JobStatus.SUCCEEDED
    phases = list(Event.objects.filter(job=job).order_by("pk").values_list("phase", flat=True))
    assert phases == [Phase.REQUESTED, Phase.STARTED, Phase.SUCCEEDED]


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"kind": NetworkKind.BRIDGE, "bridge": "br0", "vlan": 4095}, ["VLAN tag 4095", "0-4094"]),
        ({"kind": NetworkKind.BRIDGE, "bridge": "br0", "vlan": -1}, ["VLAN tag -1", "0-4094"]),
        ({"kind": NetworkKind.BRIDGE, "bridge": "br0", "vlan": "ten"}, ["whole number"]),
        ({"kind": NetworkKind.ISOLATED, "vlan": 10}, ["existing host bridge"]),
        ({"kind": NetworkKind.BRIDGE, "bridge": "br0;reboot"}, ["Linux interface name"]),
        ({"kind": NetworkKind.BRIDGE, "bridge": "b" * 16}, ["Linux interface name"]),
        ({"kind": NetworkKind.BRIDGE, "bridge": "-br"}, ["Linux interface name"]),
        ({"kind": NetworkKind.BRIDGE, "bridge": ""}, ["Host bridge is required"]),
        ({"kind": NetworkKind.NAT}, ["NAT network needs"]),
        ({"kind": NetworkKind.NAT, "ipv4": "10.1.2.3"}, ["prefix"]),
        ({"kind": NetworkKind.NAT, "ipv4": "10.1.2.0/24"}, ["not a host address"]),
        ({"kind": NetworkKind.NAT, "ipv4": "<ip/>"}, ["not an address"]),
        ({"kind": "vxlan"}, ["Choose the type"]),
        ({"name": "blue net"}, ["only letters"]),
        ({"name": "<b>"}, ["only letters"]),
        ({"name": ""}, ["Name is required"]),
        ({"description": "a\x00b"}, ["control character"]),
    ],
)
def test_bad_network_input_is_refused_and_changes_nothing(admin, dc_hosts, fields, words):
    dc, _first, _second = dc_hosts
    refused(lambda: create(admin, dc, **fields), *words)


def test_a_vlan_tag_on_a_host_bridge_is_given_to_libvirt(admin, dc_hosts, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc, kind=NetworkKind.BRIDGE, bridge="ovsbr0", vlan=4094))
    xml = network_xml(first, network.libvirt_name)
    assert xml.find("bridge").get("name") == "ovsbr0"
    assert xml.find("vlan/tag").get("id") == "4094"
    assert xml.find("virtualport").get("type") == "openvswitch"


def test_same_name_and_overlapping_subnet_are_refused(admin, dc_hosts, work):
    dc, _first, _second = dc_hosts
    work(lambda: create(admin, dc, kind=NetworkKind.NAT, ipv4="10.8.0.1/16"))
    refused(lambda: create(admin, dc, name="BLUE"), "already exists")
    refused(
        lambda: create(admin, dc, name="green", kind=NetworkKind.NAT, ipv4="10.8.3.1/24"),
        "overlaps",
        "blue",
    )
    # the same name in another data center is fine
    other = DataCenterFactory()
    assert create(admin, other).name == "blue"


def test_creating_needs_configure_network_on_the_data_center(dc_hosts):
    dc, _first, _second = dc_hosts
    user = UserFactory()
    grant(user, "NetworkAdmin", NetworkFactory())  # elsewhere
    refused(lambda: create(user, dc), "may not create logical networks")
    grant(user, "NetworkAdmin", dc)
    assert create(user, dc).status == NetworkStatus.LOCKED


def test_a_host_that_drops_midway_fails_the_job_and_nothing_is_left(admin, dc_hosts, work):
    dc, first, second = dc_hosts
    Host.objects.filter(pk=second.pk).update(uri=second.uri + ".gone.xml")  # stops answering
    network = work(lambda: create(admin, dc))
    job = Job.objects.get(params__network_id=network.pk)
    assert job.status == JobStatus.FAILED
    assert job.error.startswith(f"Host {second.name}: ")
    assert not Network.objects.filter(pk=network.pk).exists()
    assert not VnicProfile.objects.filter(network_id=network.pk).exists()
    assert network.libvirt_name not in libvirt_networks(first)  # taken off again
    failed = Event.objects.get(job=job, phase=Phase.FAILED)
    assert failed.message == "Failed to create logical network blue."


@pytest.mark.django_db(transaction=True)
def test_two_admins_creating_the_same_name_at_once_one_wins(admin, dc_hosts):
    dc, _first, _second = dc_hosts
    barrier = threading.Barrier(2)
    outcomes = []

    def attempt():
        try:
            barrier.wait()
            outcomes.append(create(admin, dc, name="race"))
        except ActionRefused as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    made = [o for o in outcomes if isinstance(o, Network)]
    messages = [o for o in outcomes if isinstance(o, str)]
    assert len(made) == 1 and len(messages) == 1, outcomes
    assert "already exists" in messages[0] or "just taken" in messages[0]
    assert Network.objects.filter(name="race").count() == 1
    assert VnicProfile.objects.filter(name="race").count() == 1


def test_removing_a_network_vms_use_is_refused(admin, dc_hosts, make_vm, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    vm = make_vm(host=first, name="web1")
    NicFactory(vm=vm, profile=profile_of(network))
    refused(
        lambda: networks.network_remove(network_id=network.pk, user=admin),
        "Cannot remove network blue",
        "web1",
    )


def test_removing_a_network_takes_it_off_the_hosts(admin, dc_hosts, work):
    dc, first, second = dc_hosts
    network = work(lambda: create(admin, dc))
    profile = profile_of(network)
    grant(UserFactory(), "VnicProfileUser", profile)
    job = work(lambda: networks.network_remove(network_id=network.pk, user=admin))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert not Network.objects.filter(pk=network.pk).exists()
    for host in (first, second):
        assert network.libvirt_name not in libvirt_networks(host)


def test_a_network_being_removed_takes_no_new_interface(admin, dc_hosts, make_vm, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    vm = make_vm(host=first)
    networks.network_remove(network_id=network.pk, user=admin)  # queued: Locked meanwhile
    refused(
        lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(network).pk),
        "Locked",
    )


def test_a_removal_whose_host_drops_leaves_the_network(admin, dc_hosts, work):
    dc, _first, second = dc_hosts
    network = work(lambda: create(admin, dc))
    Host.objects.filter(pk=second.pk).update(uri=second.uri + ".gone.xml")
    job = work(lambda: networks.network_remove(network_id=network.pk, user=admin))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and second.name in job.error
    network.refresh_from_db()
    assert network.status == NetworkStatus.OPERATIONAL


def test_edit_renames_at_once_and_redefines_a_new_backing(admin, dc_hosts, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    values = {"kind": NetworkKind.ISOLATED, "description": "d", "ipv4": ""}
    networks.network_edit(network_id=network.pk, user=admin, name="sky", **values)
    network.refresh_from_db()
    assert (network.name, network.status) == ("sky", NetworkStatus.OPERATIONAL)
    assert not Job.objects.filter(kind="network_edit").exists()
    values = {"kind": NetworkKind.NAT, "ipv4": "10.9.0.1/24"}
    work(lambda: networks.network_edit(network_id=network.pk, user=admin, name="sky", **values))
    network.refresh_from_db()
    assert network.status == NetworkStatus.OPERATIONAL
    assert network_xml(first, network.libvirt_name).find("forward").get("mode") == "nat"


def test_edit_of_the_backing_is_refused_while_a_running_vm_uses_it(admin, dc_hosts, make_vm, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    vm = make_vm(host=first, status=VMStatus.UP, name="busy")
    NicFactory(vm=vm, profile=profile_of(network))
    refused(
        lambda: networks.network_edit(
            network_id=network.pk, user=admin, name="blue", kind=NetworkKind.NAT, ipv4="10.3.0.1/24"
        ),
        "busy",
        "shut them down",
    )


# -- vNIC profiles ---------------------------------------------------------------------------


def test_profiles_new_edit_remove(admin, dc_hosts, make_vm, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    profile = networks.vnic_profile_create(
        network_id=network.pk, user=admin, name="mirrored", port_mirroring=True
    )
    assert profile.port_mirroring
    refused(
        lambda: networks.vnic_profile_create(network_id=network.pk, user=admin, name="MIRRORED"),
        "already has",
    )
    networks.vnic_profile_edit(profile_id=profile.pk, user=admin, name="m2", port_mirroring=False)
    profile.refresh_from_db()
    assert (profile.name, profile.port_mirroring) == ("m2", False)
    NicFactory(vm=make_vm(host=first, name="user1"), profile=profile)
    refused(lambda: networks.vnic_profile_remove(profile_id=profile.pk, user=admin), "user1")
    NetworkInterface.objects.filter(profile=profile).delete()
    networks.vnic_profile_remove(profile_id=profile.pk, user=admin)
    assert not VnicProfile.objects.filter(pk=profile.pk).exists()


# -- network interfaces ----------------------------------------------------------------------


@pytest.fixture
def net(admin, dc_hosts, work):
    dc, first, _second = dc_hosts
    return work(lambda: create(admin, dc))


def test_a_nic_on_a_down_vm_gets_the_pool_s_first_mac_and_is_in_its_definition(
    admin, net, make_vm, work, dc_hosts
):
    _dc, first, _second = dc_hosts
    vm = make_vm(host=first)
    nic = work(lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk))
    nic.refresh_from_db()
    vm.refresh_from_db()
    first_mac, _last = mac_pool_range(net.data_center_id)
    assert (nic.name, nic.mac, nic.locked, vm.status) == ("nic1", first_mac, False, VMStatus.DOWN)
    device = domain_nics(vm)[first_mac]
    assert device.find("source").get("network") == net.libvirt_name
    assert device.find("model").get("type") == "virtio"
    second = work(
        lambda: networks.nic_create(
            vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk, model="e1000", linked=False
        )
    )
    second.refresh_from_db()
    assert second.name == "nic2" and second.mac > first_mac
    assert domain_nics(vm)[second.mac].find("link").get("state") == "down"


@pytest.mark.parametrize(
    "mac, words",
    [
        ("56:6f:00:01:00", ["malformed"]),
        ("zz:6f:00:01:00:01", ["malformed"]),
        ("56:6f:00:01:00:01:02", ["malformed"]),
        ("01:00:5e:00:00:01", ["multicast"]),
        ("00:00:00:00:00:00", ["cannot be used"]),
        ("<mac/>", ["malformed"]),
    ],
)
def test_a_malformed_mac_is_refused(admin, net, make_vm, dc_hosts, mac, words):
    vm = make_vm(host=dc_hosts[1])
    refused(
        lambda: networks.nic_create(
            vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk, mac=mac
        ),
        *words,
    )


def test_a_mac_in_use_is_refused(admin, net, make_vm, dc_hosts, work):
    vm = make_vm(host=dc_hosts[1], name="holder")
    work(
        lambda: networks.nic_create(
            vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk, mac="02:AA:BB:CC:DD:EE"
        )
    )
    other = make_vm(host=dc_hosts[1])
    refused(
        lambda: networks.nic_create(
            vm_id=other.pk, user=admin, profile_id=profile_of(net).pk, mac="02-aa-bb-cc-dd-ee"
        ),
        "02:aa:bb:cc:dd:ee is already in use",
        "holder",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mac", ["02:00:00:00:aa:01", ""])
def test_two_interfaces_racing_for_one_mac_do_not_share_it(admin, dc_hosts, mac, sync_hosts):
    dc, first, second = dc_hosts
    network = create(admin, dc)
    Network.objects.filter(pk=network.pk).update(status=NetworkStatus.OPERATIONAL)
    vms = [
        VirtualMachine.objects.create(
            name=f"r{n}", cluster=first.cluster, host=None, memory_mb=64, vcpus=1
        )
        for n in range(2)
    ]
    barrier = threading.Barrier(2)
    outcomes = []

    def attempt(vm):
        try:
            barrier.wait()
            nic = networks.nic_create(
                vm_id=vm.pk, user=admin, profile_id=profile_of(network).pk, mac=mac
            )
            outcomes.append(nic.mac)
        except ActionRefused as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(vm,)) for vm in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    macs = list(NetworkInterface.objects.values_list("mac", flat=True))
    assert len(macs) == len(set(macs))
    if mac:  # the same MAC typed twice: one wins, the other is told
        assert macs == [mac] and any("already in use" in o for o in outcomes), outcomes
    else:  # both from the pool: two different addresses
        assert len(macs) == 2, outcomes


def test_hot_plug_link_state_and_unplug_on_a_running_vm(admin, net, make_vm, work, dc_hosts):
    vm = make_vm(host=dc_hosts[1], status=VMStatus.UP)
    nic = work(lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk))
    nic.refresh_from_db()
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP and not nic.locked
    assert conn_of(vm.host).get_domain(str(vm.uuid)).state == hypervisor.DomainState.RUNNING
    assert nic.mac in domain_nics(vm)
    event = Event.objects.filter(vm=vm, phase=Phase.SUCCEEDED).latest("pk")
    assert "hot-plugged" in event.message

    edit = {
        "profile_id": nic.profile_id,
        "name": "nic1",
        "model": nic.model,
        "mac": nic.mac,
        "plugged": True,
    }
    work(lambda: networks.nic_edit(vm_id=vm.pk, nic_id=nic.pk, user=admin, linked=False, **edit))
    assert domain_nics(vm)[nic.mac].find("link").get("state") == "down"
    refused(
        lambda: networks.nic_edit(
            vm_id=vm.pk, nic_id=nic.pk, user=admin, linked=False, **{**edit, "model": "e1000"}
        ),
        "only while it is unplugged",
    )
    work(
        lambda: networks.nic_edit(
            vm_id=vm.pk, nic_id=nic.pk, user=admin, linked=False, **{**edit, "plugged": False}
        )
    )
    assert nic.mac not in domain_nics(vm)
    nic.refresh_from_db()
    assert not nic.plugged
    work(lambda: networks.nic_remove(vm_id=vm.pk, nic_id=nic.pk, user=admin))
    assert not NetworkInterface.objects.filter(pk=nic.pk).exists()
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


def test_remove_unplugs_from_a_running_vm(admin, net, make_vm, work, dc_hosts):
    vm = make_vm(host=dc_hosts[1], status=VMStatus.UP)
    nic = work(lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk))
    nic.refresh_from_db()
    work(lambda: networks.nic_remove(vm_id=vm.pk, nic_id=nic.pk, user=admin))
    assert nic.mac not in domain_nics(vm)


def test_a_host_that_drops_during_hot_plug_leaves_nothing(admin, net, make_vm, work, dc_hosts):
    vm = make_vm(host=dc_hosts[1], status=VMStatus.UP)
    before = NetworkInterface.objects.count()
    with_job = networks.nic_create  # the job runs after the host stopped answering

    def call():
        nic = with_job(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk)
        Host.objects.filter(pk=vm.host_id).update(uri=vm.host.uri + ".gone.xml")
        return nic

    work(call)
    job = Job.objects.filter(kind="nic_create").get()
    assert job.status == JobStatus.FAILED
    assert NetworkInterface.objects.count() == before
    vm.refresh_from_db()
    assert vm.status != VMStatus.IMAGE_LOCKED


def test_a_failed_edit_puts_the_interface_back(admin, net, make_vm, work, dc_hosts):
    vm = make_vm(host=dc_hosts[1])
    nic = work(lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk))
    nic.refresh_from_db()

    def call():
        job = networks.nic_edit(
            vm_id=vm.pk,
            nic_id=nic.pk,
            user=admin,
            profile_id=nic.profile_id,
            name="renamed",
            model="rtl8139",
            mac="02:00:00:00:00:99",
            linked=False,
            plugged=True,
        )
        Host.objects.filter(pk=vm.host_id).update(uri=vm.host.uri + ".gone.xml")
        return job

    work(call)
    after = NetworkInterface.objects.get(pk=nic.pk)
    assert (after.name, after.model, after.mac, after.linked, after.locked) == (
        "nic1",
        nic.model,
        nic.mac,
        True,
        False,
    )
    vm.refresh_from_db()
    assert vm.status != VMStatus.IMAGE_LOCKED


def test_picking_a_profile_needs_vnic_profile_user_on_it(dc_hosts, admin, work, make_vm):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    vm = make_vm(host=first)
    owner = UserFactory()
    grant(owner, "UserVmEngine", vm)
    refused(
        lambda: networks.nic_create(vm_id=vm.pk, user=owner, profile_id=profile_of(network).pk),
        "needs VnicProfileUser",
    )
    grant(owner, "VnicProfileUser", profile_of(network))
    nic = networks.nic_create(vm_id=vm.pk, user=owner, profile_id=profile_of(network).pk)
    assert nic.locked  # its job is queued


def test_a_profile_of_another_data_center_is_refused(admin, net, make_vm):
    vm = make_vm()  # a host of a data center of its own
    refused(
        lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk),
        "of the VM's data center",
    )


@pytest.mark.parametrize(
    "status", [VMStatus.POWERING_UP, VMStatus.IMAGE_LOCKED, VMStatus.SUSPENDED]
)
def test_interfaces_change_only_while_down_up_or_paused(admin, net, make_vm, dc_hosts, status):
    vm = make_vm(host=dc_hosts[1], status=status)
    refused(
        lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(net).pk),
        "Down, Up or Paused",
    )


def test_run_starts_the_network_on_a_host_that_was_not_up(admin, dc_hosts, make_vm, work):
    dc, first, second = dc_hosts
    Host.objects.filter(pk=second.pk).update(status=HostStatus.NON_RESPONSIVE)
    network = work(lambda: create(admin, dc))
    assert network.libvirt_name not in libvirt_networks(second)
    Host.objects.filter(pk=second.pk).update(status=HostStatus.UP)
    vm = make_vm(host=second)
    work(lambda: networks.nic_create(vm_id=vm.pk, user=admin, profile_id=profile_of(network).pk))
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    assert libvirt_networks(second)[network.libvirt_name].active


def test_new_vm_gets_nic1_on_the_chosen_profile(admin, dc_hosts, work, sync_hosts):
    dc, first, second = dc_hosts
    network = work(lambda: create(admin, dc))
    domain = StorageDomainFactory(data_center=dc)
    sync_hosts(first, second)  # the hosts hold the domain's pool
    vm = work(
        lambda: services.vm_create(
            user=admin,
            name="withnic",
            cluster_id=first.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
            profile_id=profile_of(network).pk,
        )
    )
    vm.refresh_from_db()
    nic = vm.nics.get()
    assert (nic.name, nic.profile, nic.mac) == (
        "nic1",
        profile_of(network),
        mac_pool_range(dc.pk)[0],
    )
    assert vm.status == VMStatus.DOWN
    assert nic.mac in domain_nics(vm)


def test_new_vm_refuses_a_profile_the_user_may_not_use(dc_hosts, admin, work):
    dc, first, _second = dc_hosts
    network = work(lambda: create(admin, dc))
    domain = StorageDomainFactory(data_center=dc)
    creator = UserFactory()
    grant(creator, "PowerUserRole", dc)
    refused(
        lambda: services.vm_create(
            user=creator,
            name="nope",
            cluster_id=first.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
            profile_id=profile_of(network).pk,
        ),
        "needs VnicProfileUser",
    )


def test_a_clone_gets_the_sources_interfaces_with_new_macs(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    nic = NicFactory(vm=vm, model="e1000", linked=False)
    clone = work(lambda: services.vm_clone(vm_id=vm.pk, user=admin, clone_name=f"{vm.name}-c"))
    (copy,) = clone.nics.all()
    assert (copy.name, copy.profile_id, copy.model, copy.linked) == (
        "nic1",
        nic.profile_id,
        "e1000",
        False,
    )
    assert copy.mac != nic.mac
    first, _last = mac_pool_range(vm.cluster.data_center_id)
    assert copy.mac == first  # the pool's first free address
