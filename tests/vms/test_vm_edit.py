"""Edit Virtual Machine grows toward oVirt's window (issue 9 item 5): General, System and Host
tabs; memory, vCPUs and cores per socket reach the host at the next Run; what the status does
not let change is read-only; Start Running On places a Down VM on a chosen host of its cluster."""

import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse
from factories import DiskFactory, HostFactory, StorageDomainFactory, VMFactory
from helpers import HX, assert_messages, html_find, html_one, html_text

import hypervisor
from portal.kernel.errors import ActionRefused
from vms import services
from vms.choices import VMStatus
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def edit(vm, user, **changes):
    fields = {"description": vm.description, "sso_enabled": vm.sso_enabled, **changes}
    return services.vm_edit(vm_id=vm.pk, user=user, **fields)


def test_the_window_has_general_system_and_host_tabs(admin_client, make_vm):
    vm = make_vm(VMStatus.DOWN)
    other = HostFactory(cluster=vm.cluster, name="zz-host")
    window = admin_client.get(reverse("vms:edit", args=[vm.pk]), headers=HX)
    assert [html_text(t) for t in html_find(window, "label.side-tab")] == [
        "General",
        "System",
        "Host",
        "High Availability",
        "Boot Options",
        "Console",
    ]
    system = html_find(window, "fieldset.side-tab-panel")[1]
    assert [i.get("name") for i in system.cssselect("input")] == [
        "memory_mb",
        "vcpus",
        "cores_per_socket",
        "cpu_passthrough",
    ]
    assert all(i.get("disabled") is None for i in system.cssselect("input"))
    choices = [
        html_text(o) for o in html_one(window, "select[name=start_host]").cssselect("option")
    ]
    assert choices == ["Any Host in Cluster", vm.host.name, other.name]


def test_a_running_vm_shows_its_sizing_read_only(admin_client, make_vm):
    vm = make_vm(VMStatus.UP)
    window = admin_client.get(reverse("vms:edit", args=[vm.pk]), headers=HX)
    for name in ("memory_mb", "vcpus", "cores_per_socket"):
        assert html_one(window, f"input[name={name}]").get("disabled") is not None
    assert html_one(window, "select[name=start_host]").get("disabled") is None
    assert "only while the VM is Down" in window.content.decode()
    with pytest.raises(ActionRefused, match="can be changed only while it is Down"):
        edit(vm, None, memory_mb=4096)


def test_sizing_edited_while_down_reaches_the_host_at_the_next_run(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    edit(vm, admin, memory_mb=3072, vcpus=4, cores_per_socket=2)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    conn = hypervisor.connect(vm.host.uri)
    info = conn.get_domain(str(vm.uuid))
    assert (info.memory_mb, info.vcpus) == (3072, 4)
    xml = conn._conn.lookupByUUIDString(str(vm.uuid)).XMLDesc(0)
    topology = ET.fromstring(xml).find("cpu/topology")
    assert (topology.get("sockets"), topology.get("cores")) == ("2", "2")


def test_cores_must_divide_the_vcpus(admin, make_vm):
    vm = make_vm(VMStatus.DOWN)
    with pytest.raises(ActionRefused, match=r"Total Virtual CPUs \(3\) must be a multiple"):
        edit(vm, admin, vcpus=3, cores_per_socket=2)
    vm.refresh_from_db()
    assert (vm.vcpus, vm.cores_per_socket) == (1, 1)


def test_start_running_on_moves_a_down_vm_to_that_host(admin, sync_hosts, work):
    vm = VMFactory(status=VMStatus.DOWN)
    first = vm.host
    domain = StorageDomainFactory(data_center=vm.cluster.data_center)
    DiskFactory(vm=vm, storage_domain=domain, host=None)  # shared storage: every host reaches it
    second = HostFactory(cluster=vm.cluster)
    sync_hosts(first, second)
    edit(vm, admin, start_host_id=second.pk)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, second)
    assert hypervisor.connect(second.uri).get_domain(str(vm.uuid)).state == "running"
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.connect(first.uri).get_domain(str(vm.uuid))


def test_start_running_on_is_refused_where_the_disks_are_not(admin, make_vm):
    vm = make_vm(VMStatus.DOWN)  # its disk is on its host's local storage
    second = HostFactory(cluster=vm.cluster)
    edit(vm, admin, start_host_id=second.pk)
    with pytest.raises(ActionRefused, match=rf"its disk {vm.name}_Disk1 is on the local storage"):
        services.vm_run(vm_id=vm.pk, user=admin)
    assert VirtualMachine.objects.get(pk=vm.pk).host_id == vm.host_id
    with pytest.raises(ActionRefused, match="Choose a host of cluster"):
        edit(vm, admin, start_host_id=HostFactory().pk)  # another cluster's


def test_the_window_saves_every_tab(admin_client, make_vm):
    vm = make_vm(VMStatus.DOWN)
    url = reverse("vms:edit", args=[vm.pk])
    data = {
        "description": "app server",
        "memory_mb": 2048,
        "vcpus": 4,
        "cores_per_socket": 4,
        "start_host": vm.host.pk,
    }
    assert_messages(admin_client.post(url, data, headers=HX), "success", f"VM {vm.name} saved.")
    vm.refresh_from_db()
    assert (vm.description, vm.memory_mb, vm.vcpus, vm.cores_per_socket, vm.start_host) == (
        "app server",
        2048,
        4,
        4,
        vm.host,
    )
