"""hypervisor: libvirt networks and a domain's interfaces on libvirt's test driver, and the
XML they are built from (hypervisor/domainxml.py)."""

import xml.etree.ElementTree as ET

import pytest

import hypervisor
from hypervisor import InterfaceSpec, NetworkMode, NetworkSpec
from hypervisor.domainxml import interface_link_states, interface_macs, network_xml
from hypervisor.testnode import TestDomain, render_node_xml

UUID = "6d0b6f0e-0000-4000-8000-000000000001"
MAC = "56:6f:00:01:00:01"


@pytest.fixture
def conn(tmp_path):
    spec = hypervisor.DomainSpec(
        uuid=UUID,
        name="g",
        memory_mb=64,
        vcpus=1,
        interfaces=(InterfaceSpec(MAC, "vireo-1"),),
    )
    path = tmp_path / "node.xml"
    path.write_text(
        render_node_xml(
            hostname="h",
            cpus=2,
            memory_mb=1024,
            pools=[],
            domains=[TestDomain(spec, hypervisor.DomainState.RUNNING)],
            networks=[NetworkSpec("vireo-1", NetworkMode.ISOLATED)],
        )
    )
    connection = hypervisor.connect(f"test://{path}")
    yield connection
    hypervisor.disconnect(connection.uri)


def persistent(conn) -> str:
    return conn._current_xml(conn._domain(UUID))


@pytest.mark.parametrize(
    "ipv4, start, end",
    [
        ("192.168.150.1/24", "192.168.150.2", "192.168.150.254"),
        ("10.0.0.254/24", "10.0.0.1", "10.0.0.253"),
        ("10.0.0.9/29", "10.0.0.10", "10.0.0.14"),
    ],
)
def test_nat_network_xml_serves_dhcp_around_the_hosts_address(ipv4, start, end):
    root = ET.fromstring(network_xml(NetworkSpec("vireo-7", NetworkMode.NAT, ipv4=ipv4)))
    assert root.find("forward").get("mode") == "nat"
    dhcp = root.find("ip/dhcp/range")
    assert (dhcp.get("start"), dhcp.get("end")) == (start, end)


def test_bridge_network_xml_with_a_vlan_tag_is_open_vswitch():
    spec = NetworkSpec("vireo-8", NetworkMode.BRIDGE, bridge="br0", vlan=0, ipv4="10.0.0.1/24")
    root = ET.fromstring(network_xml(spec, uuid=UUID))
    assert root.find("uuid").text == UUID
    assert root.find("bridge").get("name") == "br0"
    assert root.find("virtualport").get("type") == "openvswitch"
    assert root.find("vlan/tag").get("id") == "0"
    assert root.find("ip") is None  # the bridge's own network, not libvirt's


def test_networks_defined_started_redefined_and_removed(conn):
    assert conn.get_network("vireo-1").active  # from the node file
    info = conn.ensure_network(NetworkSpec("vireo-2", NetworkMode.NAT, ipv4="10.5.0.1/24"))
    assert info.active and info.autostart and info.persistent
    again = conn.ensure_network(NetworkSpec("vireo-2", NetworkMode.ISOLATED), restart=True)
    assert again.uuid == info.uuid
    assert ET.fromstring(conn._network("vireo-2").XMLDesc(0)).find("forward") is None
    conn.remove_network("vireo-2")
    conn.remove_network("vireo-2")  # already gone is fine
    with pytest.raises(hypervisor.NetworkNotFound):
        conn.get_network("vireo-2")
    assert conn.network_started("vireo-1") and not conn.network_started("vireo-2")


def test_interfaces_plugged_updated_and_unplugged_on_a_running_test_domain(conn):
    other = InterfaceSpec("56:6f:00:01:00:02", "vireo-1", model="e1000")
    conn.attach_interface(UUID, other, live=True)
    assert interface_macs(persistent(conn)) == [MAC, other.mac]
    with pytest.raises(hypervisor.HypervisorError, match="already exists"):
        conn.attach_interface(UUID, other, live=True)
    conn.update_interface(UUID, InterfaceSpec(other.mac, "vireo-1", "e1000", False), live=True)
    assert interface_link_states(persistent(conn)) == {MAC: True, other.mac: False}
    conn.detach_interface(UUID, other, live=True)
    conn.detach_interface(UUID, other, live=True)  # already unplugged is fine
    assert interface_macs(persistent(conn)) == [MAC]
    assert conn.get_domain(UUID).state == hypervisor.DomainState.RUNNING
    with pytest.raises(hypervisor.HypervisorError, match="no interface"):
        conn.update_interface(UUID, other, live=True)
