"""The guest agent's data: the monitor asks the agents of running VMs on test-driver hosts and
stores what they report (pushed live); a VM with no answering agent says "no guest agent".

libvirt 9.0's test driver gives an agent's host name and its made-up addresses (on networks
with an address), not users or OS: those are parsed in tests/hypervisor/test_agent_testdriver.py
and read from a real qemu-guest-agent in tests/integration/test_guest_agent_qemu.py."""

import xml.etree.ElementTree as ET

import pytest
from monitor_support import vm_on_host

import hypervisor
from vms.choices import HostStatus, VMStatus
from vms.guest_agent import guest_report_apply, host_agents_refresh
from vms.models import GuestAgentReport, Host

pytestmark = pytest.mark.django_db


def report(vm) -> GuestAgentReport:
    return GuestAgentReport.objects.get(vm=vm)


def test_the_monitor_stores_what_the_agents_of_running_vms_report(monitor, sync_hosts, monkeypatch):
    topics = []  # the live pushes of changed reports
    monkeypatch.setattr("vms.guest_agent.broadcast", lambda *t: topics.extend(t))
    vm = vm_on_host(sync_hosts)
    down = vm_on_host(sync_hosts, host=vm.host, status=VMStatus.DOWN)
    monitor.cycle()  # connects to the host (the agents' pass uses that connection)
    monitor.agent_pool.shutdown()
    monitor.agent_pool = monitor.pool  # inline
    assert monitor.agents_cycle() == 1
    got = report(vm)
    assert got.answering and got.fqdn == f"{vm.name}host"  # the test driver's host name
    assert got.reported_at is not None
    assert not GuestAgentReport.objects.filter(vm=down).exists()  # a Down VM is not asked
    assert topics == [f"vm.{vm.pk}"]

    topics.clear()
    monitor.agents_cycle()  # the same report again: no live push
    assert topics == []


def test_a_vm_that_stops_running_says_no_guest_agent(monitor, sync_hosts, monkeypatch):
    monkeypatch.setattr("vms.guest_agent.broadcast", lambda *t: None)
    vm = vm_on_host(sync_hosts)
    guest_report_apply(vm.pk, None)  # not answering yet
    assert not report(vm).answering
    conn = hypervisor.connect(vm.host.uri)
    host_agents_refresh(vm.host, conn)
    assert report(vm).answering
    conn.destroy(str(vm.uuid))
    monitor.cycle()  # the poll sees it Down
    host_agents_refresh(vm.host, conn)
    got = report(vm)
    assert (got.answering, got.fqdn, got.ip_addresses) == (False, "", [])


def test_an_agent_that_does_not_answer_is_no_error(sync_hosts, monkeypatch):
    """A running domain without the agent's channel (defined outside Vireo, say)."""
    monkeypatch.setattr("vms.guest_agent.broadcast", lambda *t: None)
    vm = vm_on_host(sync_hosts)
    conn = hypervisor.connect(vm.host.uri)
    dom = conn._domain(str(vm.uuid))
    root = ET.fromstring(dom.XMLDesc(0))
    devices = root.find("devices")
    for channel in devices.findall("channel"):
        devices.remove(channel)
    dom.destroy()
    conn._conn.defineXML(ET.tostring(root, encoding="unicode"))
    dom.create()
    assert host_agents_refresh(vm.host, conn) == 0
    assert report(vm).answering is False


def test_one_pass_asks_at_most_the_batch_oldest_report_first(sync_hosts, settings, monkeypatch):
    monkeypatch.setattr("vms.guest_agent.broadcast", lambda *t: None)
    settings.VIREO_AGENT_POLL_BATCH = 2
    first = vm_on_host(sync_hosts)
    host = first.host
    others = [vm_on_host(sync_hosts, host=host) for _ in range(2)]
    conn = hypervisor.connect(host.uri)
    host_agents_refresh(host, conn)
    asked = set(GuestAgentReport.objects.values_list("vm_id", flat=True))
    assert len(asked) == 2
    host_agents_refresh(host, conn)  # the one never asked comes first now
    assert set(GuestAgentReport.objects.values_list("vm_id", flat=True)) == {
        first.pk,
        *(o.pk for o in others),
    }


def test_a_host_that_is_not_up_is_not_asked(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    monitor.cycle()
    Host.objects.filter(pk=vm.host_id).update(status=HostStatus.NON_RESPONSIVE)
    monitor.agent_pool.shutdown()
    monitor.agent_pool = monitor.pool
    assert monitor.agents_cycle() == 0
    assert not GuestAgentReport.objects.exists()
