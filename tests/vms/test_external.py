"""Domains a host runs that Vireo did not define (issue 9 item 3): adopted by the monitor as
external VMs with their real status, size and disks, acted on like any VM, imported into full
management, and gone with an Event when undefined outside Vireo. Test-driver hosts."""

import uuid as uuid_lib

import pytest
from django.urls import reverse
from factories import DiskFactory, StorageDomainFactory, VMFactory
from helpers import HX, GiB, assert_messages, html_one

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from storage.models import Disk
from vms import services, snapshots
from vms.choices import VMOrigin, VMStatus
from vms.external import external_name, host_domains_adopt
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def host_with_domain(sync_hosts):
    """A test host of a data center with storage domain `data`, knowing one Vireo VM, on which
    someone defined domain "legacy" (768 MB, 3 vCPUs) with a disk in data's pool."""
    vm = VMFactory(status=VMStatus.DOWN)
    host = vm.host
    domain = StorageDomainFactory(data_center=host.cluster.data_center, name="data")
    DiskFactory(vm=vm, storage_domain=domain, volume_name=f"{vm.uuid}.qcow2")
    sync_hosts(host)
    conn = hypervisor.connect(host.uri)
    conn.create_volume("data", "legacy.qcow2", 2 * GiB, preallocate=False)
    uuid = str(uuid_lib.uuid4())
    spec = hypervisor.DomainSpec(
        uuid=uuid,
        name="legacy",
        memory_mb=768,
        vcpus=3,
        disks=(hypervisor.DiskSpec(pool="data", volume="legacy.qcow2", target="vda"),),
    )
    conn.define_domain(spec)
    return host, conn, uuid


def adopted(uuid) -> VirtualMachine:
    return VirtualMachine.objects.select_related("host", "cluster").get(uuid=uuid)


def test_a_poll_adopts_a_foreign_domain_with_its_size_status_and_disks(monitor, host_with_domain):
    host, conn, uuid = host_with_domain
    monitor.cycle()
    vm = adopted(uuid)
    assert (vm.name, vm.origin, vm.domain_name) == ("external-legacy", VMOrigin.EXTERNAL, "legacy")
    assert (vm.status, vm.memory_mb, vm.vcpus) == (VMStatus.DOWN, 768, 3)
    assert (vm.host, vm.cluster) == (host, host.cluster)
    disk = Disk.objects.get(vm=vm)
    assert (disk.storage_domain.name, disk.volume_name, disk.target) == (
        "data",
        "legacy.qcow2",
        "vda",
    )
    assert disk.size_bytes == 2 * GiB and vm.unmanaged_disks == []
    assert Event.objects.filter(vm=vm, phase=Phase.DETECTED).get().message == (
        f"Host {host.name} runs domain legacy, which Vireo did not define: "
        "it is shown as external-legacy."
    )
    # It runs outside Vireo: the next poll follows its status and adopts nothing twice.
    conn.start(uuid)
    monitor.cycle()
    assert adopted(uuid).status == VMStatus.UP
    assert VirtualMachine.objects.filter(origin=VMOrigin.EXTERNAL).count() == 1


def test_a_lifecycle_event_adopts_at_once(monitor, host_with_domain):
    host, conn, uuid = host_with_domain
    monitor.watched[host.pk] = conn
    monitor.handle_event(host.pk, uuid)
    assert adopted(uuid).origin == VMOrigin.EXTERNAL


def test_a_disk_no_storage_domain_holds_for_it_is_unmanaged(monitor, sync_hosts):
    vm = VMFactory(status=VMStatus.DOWN)
    domain = StorageDomainFactory(data_center=vm.cluster.data_center, name="data")
    DiskFactory(vm=vm, storage_domain=domain, volume_name="shared.qcow2")
    sync_hosts(vm.host)
    conn = hypervisor.connect(vm.host.uri)
    uuid = str(uuid_lib.uuid4())
    # Another domain reads a volume that one of Vireo's VMs already has as its disk.
    disks = (hypervisor.DiskSpec(pool="data", volume="shared.qcow2", target="vdb"),)
    conn.define_domain(hypervisor.DomainSpec(uuid, "sharer", 512, 1, disks))
    monitor.cycle()
    external = adopted(uuid)
    assert not Disk.objects.filter(vm=external).exists()
    assert external.unmanaged_disks == [["vdb", "disk", "/data/shared.qcow2"]]
    with pytest.raises(ActionRefused, match=r"no storage domain holds its disk\(s\) vdb"):
        services.vm_import(vm_id=external.pk, user=None, name="sharer")


def test_names_are_valid_and_unique_in_the_data_center(host_with_domain):
    host = host_with_domain[0]
    dc = host.cluster.data_center_id
    VMFactory(name="external-web", cluster=host.cluster)
    assert external_name("web", dc) == "external-web-2"
    assert external_name("my vm/ü", dc) == "external-my_vm__"
    assert len(external_name("x" * 400, dc)) == 255


def test_a_domain_vireo_removed_after_the_list_was_taken_is_not_adopted(
    monitor, sync_hosts, admin, work
):
    vm = VMFactory(status=VMStatus.DOWN)
    DiskFactory(vm=vm)
    sync_hosts(vm.host)
    conn = hypervisor.connect(vm.host.uri)
    stale = conn.list_domains()
    work(lambda: services.vm_remove(vm_id=vm.pk, user=admin))
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert host_domains_adopt(vm.host, conn, stale) == 0
    assert not VirtualMachine.objects.exists()


def test_an_external_vm_runs_and_shuts_down_but_is_not_removed_or_cloned(
    monitor, host_with_domain, admin, work
):
    _host, conn, uuid = host_with_domain
    monitor.cycle()
    vm = adopted(uuid)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    assert adopted(uuid).status == VMStatus.UP
    assert conn.get_domain(uuid).name == "legacy"  # run as it is: not redefined by Vireo
    work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
    assert adopted(uuid).status == VMStatus.DOWN
    refusal = "it was defined on its host outside Vireo; Import it first"
    with pytest.raises(ActionRefused, match=refusal):
        services.vm_remove(vm_id=vm.pk, user=admin)
    with pytest.raises(ActionRefused, match=refusal):
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name="copy")
    assert adopted(uuid).status == VMStatus.DOWN  # nothing changed


def test_snapshots_of_an_external_vm_change_only_its_disks(monitor, host_with_domain, admin, work):
    """Its disk is a volume of storage domain data: Create layers an overlay, Preview and Undo
    point the domain's own definition at the snapshot's and back, keeping what its maker put
    in it (here a description Vireo never writes); Delete merges. Memory and VM Configuration
    are refused, with the reason."""
    _host, conn, uuid = host_with_domain
    raw = conn._conn.lookupByUUIDString(uuid)
    raw_xml = raw.XMLDesc(0).replace(
        "<name>legacy</name>", "<name>legacy</name><description>mine</description>"
    )
    conn._conn.defineXML(raw_xml)
    monitor.cycle()
    vm = adopted(uuid)
    disk = Disk.objects.get(vm=vm)
    with pytest.raises(ActionRefused, match="Save Memory is not offered for external-legacy"):
        snapshots.snapshot_create(
            vm_id=vm.pk, user=admin, description="s", disk_ids=[disk.pk], save_memory=True
        )
    first = work(
        lambda: snapshots.snapshot_create(
            vm_id=vm.pk, user=admin, description="before", disk_ids=[disk.pk]
        )
    )
    first.refresh_from_db()
    assert first.status == "ok"
    disk.refresh_from_db()
    overlay = disk.volume_name
    assert overlay != "legacy.qcow2"
    assert f"/data/{overlay}" in conn._conn.lookupByUUIDString(uuid).XMLDesc(0)

    with pytest.raises(ActionRefused, match="a preview gives it the snapshot's disks only"):
        snapshots.snapshot_preview(vm_id=vm.pk, snapshot_id=first.pk, user=admin)
    work(
        lambda: snapshots.snapshot_preview(
            vm_id=vm.pk, snapshot_id=first.pk, user=admin, vm_configuration=False
        )
    )
    disk.refresh_from_db()
    xml = conn._conn.lookupByUUIDString(uuid).XMLDesc(0)
    assert f"/data/{disk.volume_name}" in xml and disk.volume_name != overlay
    assert "<description>mine</description>" in xml  # its maker's definition, not Vireo's
    assert adopted(uuid).memory_mb == 768

    work(lambda: snapshots.snapshot_undo(vm_id=vm.pk, user=admin))
    xml = conn._conn.lookupByUUIDString(uuid).XMLDesc(0)
    assert f"/data/{overlay}" in xml and "<description>mine</description>" in xml

    work(lambda: snapshots.snapshot_delete(vm_id=vm.pk, snapshot_id=first.pk, user=admin))
    assert not vm.snapshots.exists()
    assert adopted(uuid).status == VMStatus.DOWN
    assert not Job.objects.filter(status=JobStatus.FAILED).exists()


def test_an_external_vm_with_an_unmanaged_disk_has_no_snapshots(monitor, sync_hosts, admin):
    vm = VMFactory(status=VMStatus.DOWN)
    domain = StorageDomainFactory(data_center=vm.cluster.data_center, name="data")
    DiskFactory(vm=vm, storage_domain=domain, volume_name="shared.qcow2")
    sync_hosts(vm.host)
    conn = hypervisor.connect(vm.host.uri)
    uuid = str(uuid_lib.uuid4())
    disks = (hypervisor.DiskSpec(pool="data", volume="shared.qcow2", target="vdb"),)
    conn.define_domain(hypervisor.DomainSpec(uuid, "sharer", 512, 1, disks))
    monitor.cycle()
    with pytest.raises(ActionRefused, match=r"no storage domain holds its disk\(s\) vdb"):
        snapshots.snapshot_create(vm_id=adopted(uuid).pk, user=admin, description="s", disk_ids=[])


def test_the_row_offers_import_not_remove(monitor, host_with_domain, admin_client):
    _host, _conn, uuid = host_with_domain
    monitor.cycle()
    vm = adopted(uuid)
    row = html_one(admin_client.get(reverse("vms:row", args=[vm.pk]), headers=HX), "tr.vm-row")
    actions = set(row.get("data-actions").split())
    assert "import" in actions and "run" in actions
    assert not actions & {"remove", "clone"}
    assert row.cssselect(".tag")[0].text == "external"
    managed = VirtualMachine.objects.exclude(pk=vm.pk).get()
    row = html_one(admin_client.get(reverse("vms:row", args=[managed.pk]), headers=HX), "tr")
    assert "import" not in row.get("data-actions").split()


def test_import_under_a_new_name_renames_the_domain(monitor, host_with_domain, admin, work):
    _host, conn, uuid = host_with_domain
    monitor.cycle()
    vm = adopted(uuid)
    work(lambda: services.vm_import(vm_id=vm.pk, user=admin, name="legacy-app"))
    vm = adopted(uuid)
    assert (vm.name, vm.origin, vm.status) == ("legacy-app", VMOrigin.VIREO, VMStatus.DOWN)
    assert conn.get_domain(uuid).name == "legacy-app"
    assert Event.objects.filter(vm=vm, phase=Phase.SUCCEEDED).get().message == (
        "VM external-legacy was imported as legacy-app: Vireo manages it now."
    )
    # Vireo's own from now on: Remove is offered and works.
    work(lambda: services.vm_remove(vm_id=vm.pk, user=admin, remove_disks=False))
    assert not VirtualMachine.objects.filter(uuid=uuid).exists()


def test_import_of_a_running_vm_keeps_its_domain_name(monitor, host_with_domain, admin, work):
    _host, conn, uuid = host_with_domain
    conn.start(uuid)
    monitor.cycle()
    vm = adopted(uuid)
    with pytest.raises(ActionRefused, match="libvirt renames only a VM that is Down"):
        services.vm_import(vm_id=vm.pk, user=admin, name="other")
    assert adopted(uuid).name == "external-legacy"
    work(lambda: services.vm_import(vm_id=vm.pk, user=admin, name="legacy"))
    vm = adopted(uuid)
    assert (vm.name, vm.origin, vm.status) == ("legacy", VMOrigin.VIREO, VMStatus.UP)
    with pytest.raises(ActionRefused, match="Vireo already manages it"):
        services.vm_import(vm_id=vm.pk, user=admin, name="again")


def test_import_window_refuses_a_taken_name_and_keeps_the_window(
    monitor, host_with_domain, admin_client
):
    host, _conn, uuid = host_with_domain
    monitor.cycle()
    vm = adopted(uuid)
    taken = VirtualMachine.objects.exclude(pk=vm.pk).get().name
    url = reverse("vms:action", args=["import"])
    window = admin_client.get(url, {"vm": vm.pk}, headers=HX)
    assert html_one(window, "input[name=name]").get("value") == "legacy"
    answer = admin_client.post(url, {"vm": vm.pk, "name": taken}, headers=HX)
    assert "already used by another virtual machine" in html_one(answer, "p.error").text
    assert adopted(uuid).name == "external-legacy"
    done = admin_client.post(url, {"vm": vm.pk, "name": "legacy"}, headers=HX)
    assert_messages(done, "success", "Importing external-legacy as legacy.")


def test_a_domain_undefined_outside_vireo_leaves_with_an_event(monitor, host_with_domain):
    host, conn, uuid = host_with_domain
    monitor.cycle()
    vm = adopted(uuid)
    conn.undefine_domain(uuid)
    monitor.cycle()
    assert not VirtualMachine.objects.filter(uuid=uuid).exists()
    assert not Disk.objects.filter(volume_name="legacy.qcow2").exists()
    assert conn.volume_at_path("/data/legacy.qcow2")[1].name == "legacy.qcow2"  # file kept
    assert Event.objects.filter(object_name=vm.name, phase=Phase.DETECTED).first().message == (
        f"Domain legacy was removed from host {host.name} outside Vireo: external-legacy is gone."
    )
    # A Vireo VM whose domain disappears is only Down, as before.
    managed = VirtualMachine.objects.get()
    assert managed.status == VMStatus.DOWN
