"""Host devices (vms/host_devices.py) on test-driver hosts, whose node files carry the test
hosts' devices (hypervisor.testnode.TEST_HOST_DEVICES): the monitor stores each host's
devices; adding devices pins the VM and turns off migration; Pin to another host, another
Start Running On and allowing migration are refused while devices are attached; a device
another running VM holds is refused at Add and at Run; the scheduler, Migrate and Maintenance
treat such a VM as pinned; Run gives the guest its devices as <hostdev>."""

import pytest
from factories import ClusterFactory, HostFactory
from helpers import HX, assert_messages, html_find, html_one, html_text

import hypervisor
from hypervisor.testnode import TEST_HOST_DEVICES, render_node_xml
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event
from vms import services
from vms.choices import HostStatus, MigrationMode, VMStatus
from vms.evacuation import host_evacuate
from vms.host_devices import (
    attached_elsewhere,
    host_devices_refresh,
    vm_host_devices_add,
    vm_host_devices_remove,
    vm_pin_to_host,
)
from vms.migration import migration_targets, vm_migrate
from vms.models import Host, HostDevice, VirtualMachine, VmHostDevice
from vms.scheduling import NoHostAvailable, Purpose, schedule

pytestmark = pytest.mark.django_db

GPU, GPU_AUDIO, NIC = "pci_0000_01_00_0", "pci_0000_01_00_1", "pci_0000_00_19_0"
SERIAL, SCSI = "usb_1_3", "scsi_2_0_0_0"


@pytest.fixture
def hosts(sync_hosts, monitor):
    """h1 and h2 of one cluster, Up, their devices read by a monitor cycle."""
    cluster = ClusterFactory()
    made = [HostFactory(cluster=cluster, name=f"h{n}", memory_mb=8192, cpus=4) for n in (1, 2)]
    sync_hosts(*made)
    monitor.cycle(wait=10)
    return made


def dev(host, name) -> HostDevice:
    return HostDevice.objects.get(host=host, name=name)


def state(vm) -> tuple:
    vm.refresh_from_db()
    return (
        vm.start_host_id,
        vm.migration_mode,
        sorted(VmHostDevice.objects.filter(vm=vm).values_list("device__name", flat=True)),
    )


# -- the monitor -------------------------------------------------------------------------------


def test_the_monitor_stores_each_hosts_devices(hosts):
    h1, h2 = hosts
    for host in hosts:
        names = sorted(HostDevice.objects.filter(host=host).values_list("name", flat=True))
        assert names == sorted(d.name for d in TEST_HOST_DEVICES)
    gpu = dev(h1, GPU)
    assert (gpu.capability, gpu.address_text, gpu.vendor_name, gpu.iommu_group) == (
        "pci",
        "0000:01:00.0",
        "NVIDIA Corporation",
        12,
    )
    assert dev(h2, SERIAL).address == [1, 3]


def test_the_monitor_reads_devices_again_only_after_its_interval(hosts, monitor):
    h1, _h2 = hosts
    HostDevice.objects.filter(host=h1, name=NIC).delete()
    monitor.cycle(wait=10)
    assert not HostDevice.objects.filter(host=h1, name=NIC).exists()  # not due yet
    monitor.devices_seconds = 0
    monitor.cycle(wait=10)
    assert HostDevice.objects.filter(host=h1, name=NIC).exists()


def test_a_device_gone_from_its_host_is_dropped_or_kept_absent_while_a_vm_has_it(
    hosts, make_vm, admin, tmp_path
):
    h1, _h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, GPU).pk])
    xml = render_node_xml(
        hostname="h1", cpus=4, memory_mb=8192, pools=[], domains=[], devices=TEST_HOST_DEVICES[:1]
    )
    path = tmp_path / "fewer.xml"
    path.write_text(xml)
    conn = hypervisor.connect(f"test://{path}")
    assert host_devices_refresh(h1, conn)
    assert list(HostDevice.objects.filter(host=h1).values_list("name", "present")) == [
        (NIC, True),
        (GPU, False),
        (GPU_AUDIO, False),  # attached with the GPU (its IOMMU group)
    ]
    assert Event.objects.filter(
        vm=vm, message__contains=f"{GPU} of VM gpu-vm is no longer present on host h1"
    ).exists()
    assert not HostDevice.objects.filter(host=h1, name=SCSI).exists()  # nobody had it
    with pytest.raises(ActionRefused, match=f"its host device {GPU} is no longer present"):
        services.vm_run(vm_id=vm.pk, user=admin)
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.DOWN


# -- Add device, Remove device, Pin to another host --------------------------------------------


def test_adding_devices_pins_the_vm_and_turns_off_migration(hosts, make_vm, admin):
    h1, _h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    added = vm_host_devices_add(
        vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, GPU).pk, dev(h1, SERIAL).pk]
    )
    assert {d.name for d in added} == {GPU, GPU_AUDIO, SERIAL}  # its IOMMU group comes along
    assert state(vm) == (h1.pk, MigrationMode.PINNED, [GPU, GPU_AUDIO, SERIAL])
    event = Event.objects.filter(vm=vm, action="host_device_add").get()
    assert "it is pinned to h1 and does not allow migration" in event.message
    vm_host_devices_remove(vm_id=vm.pk, user=admin, device_ids=[dev(h1, SERIAL).pk])
    assert state(vm) == (h1.pk, MigrationMode.PINNED, [GPU, GPU_AUDIO])


def test_devices_of_another_host_are_refused_and_change_nothing(hosts, make_vm, admin):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0)
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, GPU).pk])
    before = state(vm)
    with pytest.raises(ActionRefused, match="has host devices of host h1 attached"):
        vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h2.pk, device_ids=[dev(h2, GPU).pk])
    with pytest.raises(ActionRefused, match="not a device of host h1"):
        vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h2, NIC).pk])
    with pytest.raises(ActionRefused, match="at least one device"):
        vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[])
    other = HostFactory(name="elsewhere")
    with pytest.raises(ActionRefused, match="Choose a host of cluster"):
        vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=other.pk, device_ids=[1])
    assert state(vm) == before


def test_pin_to_another_host_is_refused_while_devices_are_attached(hosts, make_vm, admin):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    assert vm_pin_to_host(vm_id=vm.pk, user=admin, host_id=h2.pk) == h2  # no devices: pinned
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, SCSI).pk])
    before = state(vm)
    with pytest.raises(ActionRefused) as refused:
        vm_pin_to_host(vm_id=vm.pk, user=admin, host_id=h2.pk)
    assert str(refused.value) == (
        "Cannot pin gpu-vm to host h2: gpu-vm has host devices of host h1 attached "
        f"({SCSI}), and it cannot be pinned to another host while they are. Remove them first "
        "(Remove device)."
    )
    assert state(vm) == before
    vm_pin_to_host(vm_id=vm.pk, user=admin, host_id=h1.pk)  # its own host: fine
    vm_host_devices_remove(vm_id=vm.pk, user=admin, device_ids=[dev(h1, SCSI).pk])
    vm_pin_to_host(vm_id=vm.pk, user=admin, host_id=h2.pk)
    assert state(vm)[0] == h2.pk


def test_edit_vm_keeps_the_pinned_host_and_no_migration_while_devices_are_attached(
    hosts, make_vm, admin
):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0)
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, NIC).pk])
    edit = {"vm_id": vm.pk, "user": admin, "description": "", "sso_enabled": True}
    for change, why in [
        ({"start_host_id": h2.pk}, "Cannot change Start Running On"),
        ({"start_host_id": None}, "Cannot change Start Running On"),
        ({"migration": {"migration_mode": MigrationMode.MIGRATABLE}}, "Cannot allow migration"),
    ]:
        with pytest.raises(ActionRefused, match=why):
            services.vm_edit(**edit, **change)
    assert state(vm)[:2] == (h1.pk, MigrationMode.PINNED)
    services.vm_edit(**edit, start_host_id=h1.pk)  # what it is: fine


def test_edit_vm_says_why_its_host_settings_stay(hosts, make_vm, admin, admin_client):
    h1, _h2 = hosts
    vm = make_vm(host=h1, disks=0)
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, NIC).pk])
    window = admin_client.get(f"/vms/{vm.pk}/edit/", headers=HX)
    warnings = [html_text(p) for p in html_find(window, "p.warning")]
    assert any("Host devices of host h1 are attached (Host Devices" in w for w in warnings)


def test_highly_available_with_host_devices_is_allowed_with_a_warning(
    hosts, make_vm, admin, admin_client
):
    h1, _h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-ha")
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, NIC).pk])
    window = admin_client.get(f"/vms/{vm.pk}/edit/", headers=HX)
    assert any("can restart only on h1" in html_text(p) for p in html_find(window, "p.warning"))
    saved = services.vm_edit(
        vm_id=vm.pk, user=admin, description="", sso_enabled=False, highly_available=True
    )
    assert saved.highly_available
    warning = (
        "It is Highly Available with host devices of host h1 attached: it can restart only on h1."
    )
    assert saved.ha_pinned_warning.strip() == warning
    event = Event.objects.filter(vm=vm, action="edit_vm").latest("pk")
    assert (event.severity, event.message.endswith(warning)) == ("warning", True)
    assert state(vm)[:2] == (h1.pk, MigrationMode.PINNED)  # nothing else changed


def test_a_device_another_running_vm_holds_is_refused_one_a_down_vm_has_is_marked(
    hosts, make_vm, admin
):
    h1, _h2 = hosts
    runner = make_vm(host=h1, disks=0, name="runner", status=VMStatus.UP)
    idle = make_vm(host=h1, disks=0, name="idle")
    vm = make_vm(host=h1, disks=0, name="newcomer")
    gpu, nic = dev(h1, GPU), dev(h1, NIC)
    VmHostDevice.objects.create(vm=runner, device=gpu)
    VmHostDevice.objects.create(vm=idle, device=nic)
    with pytest.raises(ActionRefused) as refused:
        vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[gpu.pk, nic.pk])
    assert str(refused.value) == (
        f"Cannot add host devices to newcomer: VM runner holds host device {GPU} and is Up. "
        "Shut that VM down, or choose other devices."
    )
    assert state(vm) == (None, MigrationMode.MIGRATABLE, [])
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[nic.pk])
    assert attached_elsewhere([gpu.pk, nic.pk], vm_id=vm.pk) == {
        gpu.pk: ["runner (Up)"],
        nic.pk: ["idle"],
    }


# -- Run, the scheduler, Migrate, Maintenance --------------------------------------------------


def test_run_refuses_a_vm_whose_device_another_running_vm_holds(hosts, make_vm, admin, work):
    h1, _h2 = hosts
    first = make_vm(host=h1, disks=0, name="first")
    second = make_vm(host=h1, disks=0, name="second")
    gpu = dev(h1, GPU)
    for vm in (first, second):
        vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[gpu.pk])
    work(lambda: services.vm_run(vm_id=first.pk, user=admin))
    assert VirtualMachine.objects.get(pk=first.pk).status == VMStatus.UP
    with pytest.raises(ActionRefused) as refused:
        services.vm_run(vm_id=second.pk, user=admin)
    assert str(refused.value) == (
        f"Cannot run second: VM first holds host device {GPU} and is Up; "
        f"VM first holds host device {GPU_AUDIO} and is Up."
    )
    assert VirtualMachine.objects.get(pk=second.pk).status == VMStatus.DOWN


def test_run_starts_the_guest_on_its_pinned_host_with_its_devices(hosts, make_vm, admin, work):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    devices = [dev(h2, GPU).pk, dev(h2, SERIAL).pk, dev(h2, SCSI).pk]
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h2.pk, device_ids=devices)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, h2)
    assert hypervisor.connect(h2.uri).domain_host_devices(str(vm.uuid)) == [
        "pci 0000:01:00.0",
        "pci 0000:01:00.1",
        "scsi scsi_host2 0:0:0",
        "usb 0x0403:0x6001",
    ]


def test_the_scheduler_keeps_a_vm_with_devices_on_their_host(hosts, make_vm, admin):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h2.pk, device_ids=[dev(h2, GPU).pk])
    vm.refresh_from_db()
    assert schedule(vm, purpose=Purpose.RUN) == h2
    with pytest.raises(NoHostAvailable) as refused:
        schedule(vm, purpose=Purpose.RUN, candidates=[h1])
    assert refused.value.reasons == {
        "h1": "the VM has host devices of host h2 attached (pinned there)"
    }


def test_migrate_and_maintenance_refuse_a_vm_with_devices_with_the_reason(
    hosts, make_vm, admin, django_capture_on_commit_callbacks
):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm", status=VMStatus.UP)
    VmHostDevice.objects.create(vm=vm, device=dev(h1, GPU))
    with pytest.raises(ActionRefused) as refused:
        vm_migrate(vm_id=vm.pk, user=admin, host_id=h2.pk)
    assert str(refused.value) == (
        "Cannot migrate gpu-vm: it has host devices of host h1 attached, so it is pinned to "
        "that host. Remove its host devices (Host Devices sub-tab) to migrate it."
    )
    assert migration_targets(vm) == []
    Host.objects.filter(pk=h1.pk).update(status=HostStatus.PREPARING_FOR_MAINTENANCE)
    with django_capture_on_commit_callbacks(execute=True):
        assert host_evacuate(h1.pk) == 0
    h1.refresh_from_db()
    assert h1.maintenance_reason == (
        "gpu-vm cannot leave: it has host devices of host h1 attached, so it is pinned to that host"
    )
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.UP


# -- the sub-tab and its windows -----------------------------------------------------------------


def test_the_host_devices_sub_tab_lists_the_attached_devices(hosts, make_vm, admin, admin_client):
    h1, _h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm", status=VMStatus.UP)
    other = make_vm(host=h1, disks=0, name="other")
    VmHostDevice.objects.create(vm=vm, device=dev(h1, GPU))
    VmHostDevice.objects.create(vm=other, device=dev(h1, GPU))
    response = admin_client.get(f"/vms/{vm.pk}/details/hostdevs/", headers=HX)
    rows = html_find(response, ".hostdev-list tbody tr")
    assert len(rows) == 1
    assert "TU104GL [Tesla T4]" in html_text(rows[0]) and "other" in html_text(rows[0])
    pinned = html_text(html_one(response, ".hostdev-pinned"))
    assert "Pinned to host h1" in pinned and "take effect when it is next started" in pinned


def test_the_add_window_moves_devices_across_and_attaches_them(hosts, make_vm, admin_client):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    url = f"/vms/{vm.pk}/hostdevs/add/"
    window = admin_client.get(url, headers=HX)
    warning = html_text(html_one(window, ".hostdev-warning"))
    assert "pins the virtual machine to the selected host" in warning
    assert "turns off its migration" in warning
    available = [html_text(r) for r in html_find(window, ".hostdev-available tbody tr")]
    assert len(available) == 3 and all("0000:0" in r for r in available)  # pci by default
    base = {"host": h2.pk, "shown_host": h2.pk, "capability": "usb_device"}
    listed = admin_client.post(url, {**base, "op": "refresh"}, headers=HX)
    assert [e.get("value") for e in html_find(listed, ".hostdev-available input")] == [
        str(dev(h2, SERIAL).pk),
        str(dev(h2, "usb_1_4").pk),
    ]
    moved = admin_client.post(url, {**base, "op": "attach", "pick": dev(h2, SERIAL).pk}, headers=HX)
    assert [html_text(r) for r in html_find(moved, ".hostdev-chosen tbody td.mono")] == [SERIAL]
    chosen = [e.get("value") for e in html_find(moved, "input[name=chosen]")]
    assert chosen == [str(dev(h2, SERIAL).pk)]
    # another capability keeps the choice; another host drops it
    scsi = admin_client.post(
        url, {**base, "capability": "scsi", "chosen": chosen, "op": "refresh"}, headers=HX
    )
    assert len(html_find(scsi, ".hostdev-chosen input[name=unpick]")) == 1
    elsewhere = admin_client.post(
        url, {**base, "host": h1.pk, "chosen": chosen, "op": "refresh"}, headers=HX
    )
    assert html_find(elsewhere, "input[name=chosen]") == []
    done = admin_client.post(url, {**base, "chosen": chosen, "op": "ok"}, headers=HX)
    assert_messages(
        done,
        "success",
        "Attached 1 host device(s) of h2 to gpu-vm; it is pinned to h2 and does not allow "
        "migration.",
    )
    assert state(vm) == (h2.pk, MigrationMode.PINNED, [SERIAL])


def test_the_add_window_shows_a_refusal_and_changes_nothing(hosts, make_vm, admin_client):
    h1, _h2 = hosts
    runner = make_vm(host=h1, disks=0, name="runner", status=VMStatus.UP)
    VmHostDevice.objects.create(vm=runner, device=dev(h1, GPU))
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    url = f"/vms/{vm.pk}/hostdevs/add/"
    window = admin_client.get(url, headers=HX)
    held = html_one(window, f"#available-{dev(h1, GPU).pk}")
    assert "runner (Up)" in html_text(held) and "in use" in html_text(held)
    data = {"host": h1.pk, "shown_host": h1.pk, "capability": "pci", "chosen": dev(h1, GPU).pk}
    refused = admin_client.post(url, {**data, "op": "ok"}, headers=HX)
    assert "VM runner holds host device" in html_text(html_one(refused, "p.error"))
    assert state(vm) == (None, MigrationMode.MIGRATABLE, [])


def test_remove_and_pin_windows(hosts, make_vm, admin, admin_client):
    h1, h2 = hosts
    vm = make_vm(host=h1, disks=0, name="gpu-vm")
    vm_host_devices_add(vm_id=vm.pk, user=admin, host_id=h1.pk, device_ids=[dev(h1, NIC).pk])
    pin = admin_client.post(f"/vms/{vm.pk}/hostdevs/pin/", {"host": h2.pk}, headers=HX)
    assert "cannot be pinned to another host while they are" in html_text(html_one(pin, "p.error"))
    assert state(vm)[0] == h1.pk
    nothing = admin_client.get(f"/vms/{vm.pk}/hostdevs/remove/", headers=HX)
    assert "Select the host devices to remove" in nothing.content.decode()
    url = f"/vms/{vm.pk}/hostdevs/remove/?device={dev(h1, NIC).pk}"
    window = admin_client.get(url, headers=HX)
    assert NIC in html_text(html_one(window, "ul"))
    done = admin_client.post(
        f"/vms/{vm.pk}/hostdevs/remove/", {"device": dev(h1, NIC).pk}, headers=HX
    )
    assert_messages(done, "success", "Removed 1 host device(s) from gpu-vm.")
    moved = admin_client.post(f"/vms/{vm.pk}/hostdevs/pin/", {"host": h2.pk}, headers=HX)
    assert_messages(moved, "success", "gpu-vm is pinned to host h2.")
    assert state(vm) == (h2.pk, MigrationMode.PINNED, [])


def test_the_windows_are_404_without_edit_vm(hosts, make_vm, user_client):
    vm = make_vm(host=hosts[0], disks=0)
    for name in ("add", "remove", "pin"):
        assert user_client.get(f"/vms/{vm.pk}/hostdevs/{name}/", headers=HX).status_code == 404
        assert user_client.post(f"/vms/{vm.pk}/hostdevs/{name}/", {}, headers=HX).status_code == 404
