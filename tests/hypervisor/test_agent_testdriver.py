"""hypervisor: the guest agent's report on libvirt's test driver, and the parsing of what
libvirt's agent calls return.

libvirt 9.0's test driver answers virDomainInterfaceAddresses with the agent as source (an
address it makes up per interface) and virDomainGetHostname, but has no virDomainGetGuestInfo:
the OS, kernel, users and time zone of a real agent are proven on the real libvirtd
(tests/integration/test_guest_agent_qemu.py); here their parsing is checked on the typed
parameters libvirt documents for virDomainGetGuestInfo."""

import xml.etree.ElementTree as ET

import pytest

import hypervisor
from hypervisor import InterfaceSpec, NetworkMode, NetworkSpec
from hypervisor.agent import guest_info_parse
from hypervisor.domainxml import GUEST_AGENT_CHANNEL, domain_xml, has_guest_agent_channel
from hypervisor.testnode import TestDomain, render_node_xml

UP = "6d0b6f0e-0000-4000-8000-0000000000a1"
DOWN = "6d0b6f0e-0000-4000-8000-0000000000a2"
NO_IP = "6d0b6f0e-0000-4000-8000-0000000000a3"
MAC = "56:6f:00:01:00:a1"
MAC2 = "56:6f:00:01:00:a3"


def spec(uuid: str, name: str, nics=()) -> hypervisor.DomainSpec:
    return hypervisor.DomainSpec(uuid=uuid, name=name, memory_mb=64, vcpus=1, interfaces=nics)


@pytest.fixture
def conn(tmp_path):
    path = tmp_path / "node.xml"
    path.write_text(
        render_node_xml(
            hostname="h",
            cpus=2,
            memory_mb=1024,
            pools=[],
            domains=[
                TestDomain(spec(UP, "web", (InterfaceSpec(MAC, "vireo-1"),)), "running"),
                TestDomain(spec(DOWN, "db"), "shutoff"),
                TestDomain(spec(NO_IP, "app", (InterfaceSpec(MAC2, "vireo-2"),)), "running"),
            ],
            networks=[
                NetworkSpec("vireo-1", NetworkMode.ISOLATED, ipv4="10.9.0.1/24"),
                NetworkSpec("vireo-2", NetworkMode.ISOLATED),
            ],
        )
    )
    connection = hypervisor.connect(f"test://{path}")
    yield connection
    hypervisor.disconnect(connection.uri)


def test_every_domain_vireo_defines_has_the_guest_agent_channel():
    xml = domain_xml(spec(UP, "web"), domain_type="kvm", disks=[])
    targets = ET.fromstring(xml).findall("devices/channel[@type='unix']/target")
    assert [(t.get("type"), t.get("name")) for t in targets] == [("virtio", GUEST_AGENT_CHANNEL)]
    assert has_guest_agent_channel(xml)


def test_a_running_domain_reports_its_agents_addresses_and_host_name(conn):
    info = conn.guest_agent_info(UP)
    assert info is not None
    assert info.hostname == "webhost"  # the test driver's virDomainGetHostname
    assert [nic.mac for nic in info.interfaces] == [MAC]
    assert info.ip_addresses == ["10.9.0.3"]  # made up from the network's <ip>


def test_an_interface_on_a_network_without_ip_gives_no_addresses_and_no_crash(conn):
    """libvirt 9.0's test driver dereferences the network's missing <ip>: never asked then."""
    info = conn.guest_agent_info(NO_IP)
    assert info is not None and info.hostname == "apphost"
    assert info.ip_addresses == []


def test_a_domain_that_is_not_running_has_no_agent_and_no_error(conn):
    assert conn.guest_agent_info(DOWN) is None


def test_a_running_domain_without_the_agents_channel_has_no_agent(conn):
    """As a domain defined outside Vireo may be: qemu says "guest agent is not configured"."""
    root = ET.fromstring(conn._domain(DOWN).XMLDesc(0))
    devices = root.find("devices")
    for channel in devices.findall("channel"):
        devices.remove(channel)
    conn._conn.defineXML(ET.tostring(root, encoding="unicode"))
    conn.start(DOWN)
    assert conn.guest_agent_info(DOWN) is None


def test_a_missing_domain_is_an_error_not_a_silent_agent(conn):
    with pytest.raises(hypervisor.DomainNotFound):
        conn.guest_agent_info("6d0b6f0e-0000-4000-8000-0000000000ff")


def test_guest_info_parameters_are_read_as_libvirt_documents_them():
    params = {
        "user.count": 2,
        "user.0.name": "alice",
        "user.0.login-time": 1_700_000_000_000,
        "user.1.name": "bob",
        "user.1.domain": "CORP",
        "os.id": "debian",
        "os.name": "Debian GNU/Linux",
        "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
        "os.version": "12 (bookworm)",
        "os.kernel-release": "6.1.0-28-amd64",
        "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1",
        "os.machine": "x86_64",
        "timezone.name": "CET",
        "timezone.offset": 3600,
        "hostname": "web.example.org",
    }
    interfaces = {
        "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"addr": "127.0.0.1", "prefix": 8}]},
        "eth0": {
            "hwaddr": "52:54:00:aa:bb:cc",
            "addrs": [
                {"addr": "192.168.1.5", "prefix": 24, "type": 0},
                {"addr": "fe80::1", "prefix": 64, "type": 1},
                {"addr": "::1", "prefix": 128, "type": 1},
            ],
        },
    }
    info = guest_info_parse(params, interfaces)
    assert info.hostname == "web.example.org"
    assert info.os_name == "Debian GNU/Linux 12 (bookworm)"
    assert (info.kernel_release, info.machine) == ("6.1.0-28-amd64", "x86_64")
    assert (info.timezone, info.timezone_offset) == ("CET", 3600)
    assert [str(u) for u in info.users] == ["alice", "CORP\\bob"]
    assert info.users[0].login_time == 1_700_000_000
    assert info.ip_addresses == ["192.168.1.5", "fe80::1"]  # no loopback


def test_an_agent_that_reports_nothing_parses_to_empty_fields():
    info = guest_info_parse({}, None)
    assert (info.hostname, info.os_name, info.users, info.ip_addresses) == ("", "", (), [])
